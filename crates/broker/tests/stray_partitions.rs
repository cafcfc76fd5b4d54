//! A partition directory the metadata does not name (a damaged or lost metadata log, a
//! directory copied in by hand) is set aside at startup, not deleted: its data stays on
//! disk as `<topic>-<partition>.<id>-stray`, the broker serves everything else, and the
//! metric counts it.

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_broker::controller::NewTopic;
use sluice_broker::partition::Origin;
use sluice_broker::{Broker, BrokerConfig};
use sluice_record::{BatchBuilder, Compression, OwnedRecord};

fn open(dir: &std::path::Path) -> Arc<Broker> {
    let mut props = BTreeMap::new();
    props.insert("log.dirs".to_string(), dir.display().to_string());
    Broker::open(BrokerConfig::from_overrides(props).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_unknown_to_the_metadata_are_set_aside_not_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    for name in ["kept", "orphan"] {
        let spec = NewTopic {
            assignments: Vec::new(),
            name: name.into(),
            partitions: 1,
            replication_factor: 1,
            configs: BTreeMap::new(),
        };
        broker.create_topic(spec, false).await.unwrap();
        let mut builder = BatchBuilder::new(Compression::None);
        builder.push(OwnedRecord::new(
            None,
            Some(format!("{name} data").into_bytes()),
            1,
        ));
        let mut batch = builder.build().unwrap();
        let appended = broker
            .partition(name, 0)
            .unwrap()
            .append(&mut batch, Origin::Client, true)
            .unwrap();
        appended.durable().await.unwrap();
    }
    broker.shutdown().unwrap();
    drop(broker);

    // The metadata log is lost (a damaged disk, an operator's mistake): at the next start
    // no topic is named, and both partitions' data must survive.
    let before: Vec<Vec<u8>> = ["kept-0", "orphan-0"]
        .iter()
        .map(|p| std::fs::read(dir.path().join(p).join("00000000000000000000.log")).unwrap())
        .collect();
    std::fs::remove_dir_all(dir.path().join("metadata")).unwrap();
    let broker = open(dir.path());
    assert!(broker.image().topics.is_empty());
    assert!(broker.partitions().is_empty(), "nothing unnamed is served");
    assert!(
        !dir.path().join("orphan-0").exists(),
        "not under its partition name"
    );
    let stray = broker.partitions().stray_dirs();
    assert_eq!(stray.len(), 2, "{stray:?}");
    for (dir, bytes) in stray.iter().zip(&before) {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        assert!(name.ends_with("-stray"), "{name}");
        let kept = std::fs::read(dir.join("00000000000000000000.log")).unwrap();
        assert_eq!(&kept, bytes, "{name}: the data is kept byte for byte");
    }
    let metrics = sluice_broker::admin_http::render_metrics(&broker);
    assert!(
        metrics.contains("sluice_stray_partition_dirs 2\n"),
        "{metrics}"
    );

    // A stray directory is never opened again: the next start leaves it alone.
    broker.shutdown().unwrap();
    drop(broker);
    let broker = open(dir.path());
    assert_eq!(broker.partitions().stray_dirs(), stray);
}

/// A partition directory whose `partition.metadata` names another topic ID than the
/// metadata's topic of that name (an earlier topic of the same name, deleted while this
/// broker was down or before its directory went) is set aside, not served as the new topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_of_an_earlier_topic_of_the_same_name_is_not_served() {
    use sluice_broker::partition::partition_metadata;

    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    let spec = NewTopic {
        assignments: Vec::new(),
        name: "reused".into(),
        partitions: 1,
        replication_factor: 1,
        configs: BTreeMap::new(),
    };
    let topic = broker.create_topic(spec, false).await.unwrap();
    let partition_dir = dir.path().join("reused-0");
    assert_eq!(
        partition_metadata::read(&partition_dir),
        Some(topic.id),
        "the directory names its topic ID"
    );
    let mut builder = BatchBuilder::new(Compression::None);
    builder.push(OwnedRecord::new(
        None,
        Some(b"old topic's data".to_vec()),
        1,
    ));
    let mut batch = builder.build().unwrap();
    broker
        .partition("reused", 0)
        .unwrap()
        .append(&mut batch, Origin::Client, true)
        .unwrap()
        .durable()
        .await
        .unwrap();
    broker.shutdown().unwrap();
    drop(broker);

    // The directory now claims an earlier topic's ID.
    let earlier = uuid::Uuid::new_v4();
    partition_metadata::write(&partition_dir, earlier).unwrap();
    let broker = open(dir.path());
    let served = broker.partition("reused", 0).unwrap();
    assert_eq!(
        served.offsets().log_end_offset,
        0,
        "served empty, as the new topic"
    );
    assert_eq!(partition_metadata::read(&partition_dir), Some(topic.id));
    let stray = broker.partitions().stray_dirs();
    assert_eq!(stray.len(), 1, "{stray:?}");
    assert_eq!(
        partition_metadata::read(&stray[0]),
        Some(earlier),
        "kept aside"
    );
    assert!(
        std::fs::read(stray[0].join("00000000000000000000.log"))
            .unwrap()
            .windows(16)
            .any(|w| w == b"old topic's data")
    );
}
