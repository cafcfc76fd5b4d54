//! How metadata travels through the quorum: one change (the records one request makes) is
//! one quorum entry, and a snapshot is the records that recreate an image.
//!
//! Layout of both: `version u8 (0) | count u32 | { length u32 | record }*`, records in
//! [`MetadataRecord`]'s own encoding. A proposed change is `version u8 (1) | proposer u64 |
//! sequence u64 | count ...`: a node that proposes through the leader (a follower's proposal
//! is forwarded and never learns its index) recognises its own change by those two when it
//! commits. Decoding refuses anything else: a corrupt entry or snapshot stops the quorum
//! rather than being half-applied.

use super::image::MetadataImage;
use super::record::{EncodeError, MetadataRecord};

const VERSION: u8 = 0;
const PROPOSAL_VERSION: u8 = 1;

/// Who proposed a change: the proposer's quorum id and its sequence number for the change.
pub type ProposalId = (u64, u64);

/// Encodes the records of one change (or of a snapshot).
pub fn encode(records: &[MetadataRecord]) -> Result<Vec<u8>, EncodeError> {
    let mut out = vec![VERSION];
    put_records(&mut out, records)?;
    Ok(out)
}

/// [`encode`]'s bytes of a change, as proposed by `proposal`.
pub fn as_proposal(encoded: &[u8], proposal: ProposalId) -> Vec<u8> {
    assert_eq!(
        encoded.first(),
        Some(&VERSION),
        "a change as encode wrote it"
    );
    let mut out = Vec::with_capacity(encoded.len() + 16);
    out.push(PROPOSAL_VERSION);
    out.extend_from_slice(&proposal.0.to_be_bytes());
    out.extend_from_slice(&proposal.1.to_be_bytes());
    out.extend_from_slice(&encoded[1..]);
    out
}

fn put_records(out: &mut Vec<u8>, records: &[MetadataRecord]) -> Result<(), EncodeError> {
    out.extend_from_slice(&(records.len() as u32).to_be_bytes());
    for record in records {
        let bytes = record.encode()?;
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    Ok(())
}

/// Decodes what [`encode`] wrote.
pub fn decode(bytes: &[u8]) -> Result<Vec<MetadataRecord>, String> {
    match decode_proposal(bytes)? {
        (None, records) => Ok(records),
        (Some(_), _) => Err("a proposal where records were expected".into()),
    }
}

/// Decodes what [`encode`] or [`encode_proposal`] wrote: the proposer, if recorded, and the
/// records.
pub fn decode_proposal(bytes: &[u8]) -> Result<(Option<ProposalId>, Vec<MetadataRecord>), String> {
    let (&version, mut rest) = bytes.split_first().ok_or("empty metadata entry")?;
    let proposal = match version {
        VERSION => None,
        PROPOSAL_VERSION => {
            let high = take_u32(&mut rest)?;
            let low = take_u32(&mut rest)?;
            let proposer = (u64::from(high) << 32) | u64::from(low);
            let high = take_u32(&mut rest)?;
            let low = take_u32(&mut rest)?;
            Some((proposer, (u64::from(high) << 32) | u64::from(low)))
        }
        other => return Err(format!("metadata entry version {other}")),
    };
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
    Ok((proposal, records))
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
        .flat_map(|topic| {
            let created = MetadataRecord::CreateTopic {
                name: topic.name.clone(),
                id: topic.id,
                partitions: topic.partitions,
                configs: topic.configs.clone(),
            };
            let placed = (0..topic.partitions).filter_map(|index| {
                let state = topic.state(index)?;
                (state.partition_epoch >= 0).then(|| MetadataRecord::PartitionChange {
                    topic: topic.name.clone(),
                    partition: index,
                    replicas: state.replicas.clone(),
                    isr: state.isr.clone(),
                    leader: state.leader,
                    leader_epoch: state.leader_epoch,
                    partition_epoch: state.partition_epoch,
                    adding: state.adding.clone(),
                    removing: state.removing.clone(),
                })
            });
            std::iter::once(created).chain(placed)
        })
        .collect();
    for broker in image.brokers.values() {
        records.push(MetadataRecord::RegisterBroker {
            id: broker.id,
            incarnation: broker.incarnation,
            host: broker.host.clone(),
            port: broker.port,
        });
        if broker.fenced {
            records.push(MetadataRecord::FenceBroker {
                id: broker.id,
                incarnation: broker.incarnation,
            });
        }
    }
    if let Some(id) = &image.cluster_id {
        records.push(MetadataRecord::ClusterId { id: id.clone() });
    }
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
            MetadataRecord::RegisterBroker {
                id: 1,
                incarnation: Uuid::from_u128(7),
                host: "h1".into(),
                port: 9092,
            },
            MetadataRecord::RegisterBroker {
                id: 2,
                incarnation: Uuid::from_u128(8),
                host: "h2".into(),
                port: 9093,
            },
            MetadataRecord::FenceBroker {
                id: 2,
                incarnation: Uuid::from_u128(8),
            },
            MetadataRecord::PartitionChange {
                topic: "a".into(),
                partition: 4,
                replicas: vec![2, 1],
                isr: vec![1],
                leader: 1,
                leader_epoch: 3,
                partition_epoch: 5,
                adding: vec![2],
                removing: vec![],
            },
            MetadataRecord::ClusterId { id: "c1".into() },
        ] {
            image.apply(&record).unwrap();
        }
        let snapshot = encode(&image_records(&image)).unwrap();
        let restored = decode_snapshot(&snapshot).unwrap();
        assert_eq!(restored.topics, image.topics);
        assert_eq!(restored.topic_names_by_id, image.topic_names_by_id);
        assert_eq!(restored.producer_ids_end, 2000);
        assert_eq!(restored.brokers, image.brokers);
        assert!(restored.brokers[&2].fenced);
        assert_eq!(restored.cluster_id.as_deref(), Some("c1"));
        assert_eq!(
            restored.partition("a", 4).map(|s| (
                s.leader,
                s.leader_epoch,
                s.partition_epoch,
                s.isr.clone()
            )),
            Some((1, 3, 5, vec![1]))
        );
    }

    #[test]
    fn a_proposal_names_its_proposer() {
        let records = [MetadataRecord::DeleteTopic { name: "t".into() }];
        let bytes = as_proposal(&encode(&records).unwrap(), (u64::MAX - 1, 42));
        let (proposal, decoded) = decode_proposal(&bytes).unwrap();
        assert_eq!(proposal, Some((u64::MAX - 1, 42)));
        assert_eq!(decoded, records);
        assert!(decode(&bytes).is_err(), "a snapshot is never a proposal");
        assert_eq!(decode_proposal(&encode(&records).unwrap()).unwrap().0, None);
    }

    #[test]
    fn stale_decisions_do_not_apply() {
        let mut image = MetadataImage::default();
        let create = MetadataRecord::CreateTopic {
            name: "a".into(),
            id: Uuid::from_u128(1),
            partitions: 1,
            configs: BTreeMap::new(),
        };
        image.apply(&create).unwrap();
        let change =
            |epoch, leader, isr: &[i32], partition_epoch| MetadataRecord::PartitionChange {
                topic: "a".into(),
                partition: 0,
                replicas: vec![1, 2, 3],
                isr: isr.to_vec(),
                leader,
                leader_epoch: epoch,
                partition_epoch,
                adding: Vec::new(),
                removing: Vec::new(),
            };
        image.apply(&change(0, 1, &[1, 2, 3], 0)).unwrap();
        assert!(
            image.apply(&change(0, 1, &[1, 2, 3], 0)).is_err(),
            "the same partition epoch twice"
        );
        assert!(
            image.apply(&change(0, 2, &[1, 2, 3], 1)).is_err(),
            "another leader in the same leader epoch"
        );
        assert!(
            image.apply(&change(1, 4, &[1, 2, 3], 1)).is_err(),
            "a leader that is no replica"
        );
        assert!(
            image.apply(&change(1, 3, &[1, 2], 1)).is_err(),
            "a leader that is not in sync"
        );
        assert!(
            image.apply(&change(1, 1, &[1, 4], 1)).is_err(),
            "an in-sync replica that is no replica"
        );
        image.apply(&change(0, 1, &[1, 3], 1)).unwrap();
        assert_eq!(image.partition("a", 0).unwrap().isr, vec![1, 3]);
        assert!(
            image.apply(&change(0, 1, &[1], 1)).is_err(),
            "an ISR change computed from the state before the last one"
        );
        image.apply(&change(1, -1, &[3], 2)).unwrap();
        assert!(
            image.apply(&change(0, 1, &[1], 3)).is_err(),
            "an older leader epoch"
        );
        let register = MetadataRecord::RegisterBroker {
            id: 1,
            incarnation: Uuid::from_u128(5),
            host: "h".into(),
            port: 1,
        };
        image.apply(&register).unwrap();
        assert!(image.apply(&register).is_err(), "registered twice");
        let fence = MetadataRecord::FenceBroker {
            id: 1,
            incarnation: Uuid::from_u128(5),
        };
        image.apply(&fence).unwrap();
        assert!(image.apply(&fence).is_err(), "fenced twice");
        image
            .apply(&MetadataRecord::ClusterId { id: "x".into() })
            .unwrap();
        assert!(
            image
                .apply(&MetadataRecord::ClusterId { id: "y".into() })
                .is_err()
        );
    }

    #[test]
    fn damaged_entries_are_refused() {
        let good = encode(&[MetadataRecord::DeleteTopic { name: "t".into() }]).unwrap();
        assert_eq!(decode(&good).unwrap().len(), 1);
        assert!(decode(&[]).is_err());
        assert!(decode(&[7, 0, 0, 0, 0]).is_err(), "unknown version");
        assert!(decode(&good[..good.len() - 1]).is_err(), "cut");
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode(&trailing).is_err());
        let mut huge = vec![0u8, 0xff, 0xff, 0xff, 0xff];
        huge.extend_from_slice(&[0xff; 8]);
        assert!(decode(&huge).is_err(), "a count larger than the bytes");
    }
}
