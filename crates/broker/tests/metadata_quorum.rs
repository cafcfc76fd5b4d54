//! Three metadata stores form a Raft quorum over TCP on loopback: they elect a leader, a
//! change made on the leader reaches every image, a follower refuses changes naming the
//! leader, the quorum elects a new leader when the old one stops, and the old one catches
//! up when it returns.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_broker::metadata::{MetadataError, MetadataRecord, MetadataStore, QuorumSetup};
use uuid::Uuid;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Cluster {
    dirs: Vec<PathBuf>,
    voters: Vec<(i32, String, u16)>,
    stores: Vec<Option<Arc<MetadataStore>>>,
}

async fn open(dir: &Path, node_id: i32, voters: &[(i32, String, u16)]) -> Arc<MetadataStore> {
    let port = voters.iter().find(|v| v.0 == node_id).unwrap().2;
    let setup = QuorumSetup {
        node_id,
        voters: voters.to_vec(),
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        election_timeout: Duration::from_millis(500),
    };
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        Arc::new(
            MetadataStore::open_with(
                &dir,
                1,
                Arc::new(sluice_log::SystemClock),
                node_id,
                Some(&setup),
            )
            .unwrap(),
        )
    })
    .await
    .unwrap()
}

impl Cluster {
    async fn start(root: &Path) -> Cluster {
        let voters: Vec<(i32, String, u16)> = (0..3)
            .map(|id| (id, "127.0.0.1".to_string(), free_port()))
            .collect();
        let dirs: Vec<PathBuf> = (0..3).map(|i| root.join(format!("node-{i}"))).collect();
        let mut stores = Vec::new();
        for (i, dir) in dirs.iter().enumerate() {
            stores.push(Some(open(dir, i as i32, &voters).await));
        }
        Cluster {
            dirs,
            voters,
            stores,
        }
    }

    /// The leader every running store agrees on, once they do.
    async fn leader(&self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        loop {
            let seen: Vec<Option<i32>> = self
                .stores
                .iter()
                .flatten()
                .map(|s| s.quorum_status().leader)
                .collect();
            if let Some(Some(leader)) = seen.first()
                && seen.iter().all(|l| *l == Some(*leader))
                && self.stores[*leader as usize].is_some()
            {
                return *leader;
            }
            assert!(Instant::now() < deadline, "no agreed leader: {seen:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn create(&self, on: i32, name: &str) -> Result<(), MetadataError> {
        let record = MetadataRecord::CreateTopic {
            name: name.into(),
            id: Uuid::new_v4(),
            partitions: 3,
            configs: BTreeMap::new(),
        };
        let store = self.stores[on as usize].as_ref().unwrap();
        store
            .update(|_| Ok::<_, ()>((vec![record], ())))
            .await?
            .unwrap()
            .published
            .unwrap();
        Ok(())
    }

    async fn all_see(&self, topics: &[&str], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let done = self.stores.iter().flatten().all(|s| {
                let image = s.image();
                topics.iter().all(|t| image.topic(t).is_some())
            });
            if done {
                return;
            }
            assert!(Instant::now() < deadline, "not every store sees {topics:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_elect_replicate_fail_over_and_catch_up() {
    let root = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(root.path()).await;
    let leader = cluster.leader(Duration::from_secs(20)).await;

    cluster.create(leader, "first").await.unwrap();
    cluster.all_see(&["first"], Duration::from_secs(10)).await;

    let follower = (leader + 1) % 3;
    match cluster.create(follower, "refused").await {
        Err(MetadataError::NotController { leader: named }) => assert_eq!(named, Some(leader)),
        other => panic!("a follower took a change: {other:?}"),
    }

    // The leader stops: the two others elect one of themselves and go on.
    let stopped = cluster.stores[leader as usize].take().unwrap();
    stopped.shutdown().unwrap();
    drop(stopped);
    let started = Instant::now();
    let new_leader = cluster.leader(Duration::from_secs(20)).await;
    let failover = started.elapsed();
    assert_ne!(new_leader, leader);
    cluster.create(new_leader, "second").await.unwrap();
    cluster
        .all_see(&["first", "second"], Duration::from_secs(10))
        .await;
    eprintln!("failover took {failover:?}");

    // The old leader returns with its data and catches up.
    let dir = cluster.dirs[leader as usize].clone();
    let voters = cluster.voters.clone();
    cluster.stores[leader as usize] = Some(open(&dir, leader, &voters).await);
    cluster
        .all_see(&["first", "second"], Duration::from_secs(20))
        .await;
    for store in cluster.stores.iter().flatten() {
        assert!(store.image().topic("refused").is_none());
        store.shutdown().unwrap();
    }
}
