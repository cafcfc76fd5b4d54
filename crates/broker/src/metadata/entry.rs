//! How metadata travels through the quorum: one change (the records one request makes) is
//! one quorum entry, and a snapshot is the records that recreate an image.
//!
//! Layout of both: `version u8 (0) | count u32 | { length u32 | record }*`, records in
//! [`MetadataRecord`]'s own encoding. Decoding refuses anything else: a corrupt entry or
//! snapshot stops the quorum rather than being half-applied.

use super::image::MetadataImage;
use super::record::{EncodeError, MetadataRecord};

const VERSION: u8 = 0;

/// Encodes the records of one change.
pub fn encode(records: &[MetadataRecord]) -> Result<Vec<u8>, EncodeError> {
    let mut out = vec![VERSION];
    out.extend_from_slice(&(records.len() as u32).to_be_bytes());
    for record in records {
        let bytes = record.encode()?;
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    Ok(out)
}

/// Decodes what [`encode`] wrote.
pub fn decode(bytes: &[u8]) -> Result<Vec<MetadataRecord>, String> {
    let (&version, mut rest) = bytes.split_first().ok_or("empty metadata entry")?;
    if version != VERSION {
        return Err(format!("metadata entry version {version}"));
    }
    let count = take_u32(&mut rest)? as usize;
    let mut records = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let len = take_u32(&mut rest)? as usize;
        let bytes = rest
            .get(..len)
            .ok_or("metadata entry shorter than its records")?;
        records.push(MetadataRecord::decode(bytes)?);
        rest = &rest[len..];
    }
    if !rest.is_empty() {
        return Err("trailing bytes after the metadata records".into());
    }
    Ok(records)
}

fn take_u32(rest: &mut &[u8]) -> Result<u32, String> {
    let bytes: [u8; 4] = rest
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or("metadata entry cut short")?;
    *rest = &rest[4..];
    Ok(u32::from_be_bytes(bytes))
}

/// The records that recreate `image` from an empty one.
pub fn image_records(image: &MetadataImage) -> Vec<MetadataRecord> {
    let mut records: Vec<MetadataRecord> = image
        .topics
        .values()
        .map(|topic| MetadataRecord::CreateTopic {
            name: topic.name.clone(),
            id: topic.id,
            partitions: topic.partitions,
            configs: topic.configs.clone(),
        })
        .collect();
    if image.producer_ids_end > 0 {
        records.push(MetadataRecord::ProducerIdBlock {
            end: image.producer_ids_end,
        });
    }
    records
}

/// The image a snapshot holds.
pub fn decode_snapshot(bytes: &[u8]) -> Result<MetadataImage, String> {
    let mut image = MetadataImage::default();
    for record in decode(bytes)? {
        image.apply(&record).map_err(|e| e.to_string())?;
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use uuid::Uuid;

    use super::*;

    #[test]
    fn an_image_survives_its_snapshot() {
        let mut image = MetadataImage::default();
        for record in [
            MetadataRecord::CreateTopic {
                name: "a".into(),
                id: Uuid::from_u128(1),
                partitions: 2,
                configs: BTreeMap::new(),
            },
            MetadataRecord::CreateTopic {
                name: "b".into(),
                id: Uuid::from_u128(2),
                partitions: 1,
                configs: [("cleanup.policy".to_string(), "compact".to_string())].into(),
            },
            MetadataRecord::SetPartitionCount {
                name: "a".into(),
                partitions: 5,
            },
            MetadataRecord::ProducerIdBlock { end: 2000 },
        ] {
            image.apply(&record).unwrap();
        }
        let snapshot = encode(&image_records(&image)).unwrap();
        let restored = decode_snapshot(&snapshot).unwrap();
        assert_eq!(restored.topics, image.topics);
        assert_eq!(restored.topic_names_by_id, image.topic_names_by_id);
        assert_eq!(restored.producer_ids_end, 2000);
    }

    #[test]
    fn damaged_entries_are_refused() {
        let good = encode(&[MetadataRecord::DeleteTopic { name: "t".into() }]).unwrap();
        assert_eq!(decode(&good).unwrap().len(), 1);
        assert!(decode(&[]).is_err());
        assert!(decode(&[1, 0, 0, 0, 0]).is_err(), "unknown version");
        assert!(decode(&good[..good.len() - 1]).is_err(), "cut");
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode(&trailing).is_err());
        let mut huge = vec![0u8, 0xff, 0xff, 0xff, 0xff];
        huge.extend_from_slice(&[0xff; 8]);
        assert!(decode(&huge).is_err(), "a count larger than the bytes");
    }
}
