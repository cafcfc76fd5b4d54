//! Three metadata stores form a Raft quorum over TCP on loopback: they elect a leader and
//! agree on a cluster id, a change made on the leader reaches every image, a follower's
//! change is forwarded to the leader, a change computed from a stale image does not apply,
//! the quorum elects a new leader when the old one stops, the old one catches up when it
//! returns, and a node of another cluster is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::free_port;
use sluice_broker::metadata::{MetadataError, MetadataRecord, MetadataStore, QuorumSetup};
use uuid::Uuid;

struct Cluster {
    dirs: Vec<PathBuf>,
    voters: Vec<(i32, String, u16)>,
    stores: Vec<Option<Arc<MetadataStore>>>,
}

async fn open(dir: &Path, node_id: i32, voters: &[(i32, String, u16)]) -> Arc<MetadataStore> {
    open_as(dir, node_id, voters, None).await
}

async fn open_as(
    dir: &Path,
    node_id: i32,
    voters: &[(i32, String, u16)],
    cluster_id: Option<&str>,
) -> Arc<MetadataStore> {
    let cluster_id = cluster_id.map(str::to_string);
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
                cluster_id.as_deref(),
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
        // Forwarded proposals may be dropped while a leader settles: retried, as clients do.
        for attempt in 0.. {
            match store
                .update(|_| Ok::<_, ()>((vec![record.clone()], ())))
                .await
            {
                Ok(done) => {
                    done.unwrap().published.unwrap();
                    return Ok(());
                }
                Err(MetadataError::Quorum(reason)) if attempt < 5 => {
                    eprintln!("retrying {name}: {reason}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(err) => return Err(err),
            }
        }
        unreachable!()
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

    // Every voter comes to hold the cluster id the first leader recorded (in an entry of
    // its own, which may follow the topic's).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ids: Vec<Option<String>> = cluster
            .stores
            .iter()
            .flatten()
            .map(|s| s.image().cluster_id.clone())
            .collect();
        if ids[0].is_some() && ids.iter().all(|id| *id == ids[0]) {
            break;
        }
        assert!(Instant::now() < deadline, "no agreed cluster id: {ids:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A follower's change is forwarded to the leader; a change only the leader may make
    // is refused there, and nothing of it is proposed.
    let follower = (leader + 1) % 3;
    let leader_only = cluster.stores[follower as usize]
        .as_ref()
        .unwrap()
        .update_as_leader(|_| {
            Ok::<_, ()>((
                vec![MetadataRecord::DeleteTopic {
                    name: "first".into(),
                }],
                (),
            ))
        })
        .await;
    assert!(
        matches!(leader_only, Err(MetadataError::NotController { .. })),
        "{:?}",
        leader_only.map(|r| r.map(|_| ()))
    );
    cluster.create(follower, "forwarded").await.unwrap();
    cluster
        .all_see(&["forwarded"], Duration::from_secs(10))
        .await;
    // The same topic created at once on two nodes, each from its own view: one change
    // applies, the other (computed from what became a stale image) applies nowhere and its
    // proposer hears so. Every node holds the same topic.
    let racing = |on: i32| {
        let store = cluster.stores[on as usize].clone().unwrap();
        async move {
            let record = MetadataRecord::CreateTopic {
                name: "raced".into(),
                id: Uuid::new_v4(),
                partitions: 1,
                configs: BTreeMap::new(),
            };
            store
                .update(|image| {
                    if image.topic("raced").is_some() {
                        return Err(());
                    }
                    Ok((vec![record], ()))
                })
                .await
        }
    };
    let (a, b) = tokio::join!(racing(leader), racing(follower));
    let applied = [&a, &b].iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    assert_eq!(applied, 1, "{a:?} {b:?}");
    for other in [&a, &b] {
        assert!(
            matches!(
                other,
                Ok(Ok(_)) | Ok(Err(())) | Err(MetadataError::Stale(_))
            ),
            "{other:?}"
        );
    }
    cluster.all_see(&["raced"], Duration::from_secs(10)).await;
    let ids: Vec<Uuid> = cluster
        .stores
        .iter()
        .flatten()
        .map(|s| s.image().topic("raced").unwrap().id)
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]));

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
        assert_eq!(store.image().topic("forwarded").unwrap().partitions, 3);
        store.shutdown().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(root.path()).await;
    let leader = cluster.leader(Duration::from_secs(20)).await;
    cluster.create(leader, "ours").await.unwrap();
    cluster.all_see(&["ours"], Duration::from_secs(10)).await;
    // A follower is replaced by a node whose data says it belongs to another cluster.
    let follower = (leader + 1) % 3;
    let old = cluster.stores[follower as usize].take().unwrap();
    old.shutdown().unwrap();
    drop(old);
    let foreign_dir = root.path().join("foreign");
    let voters = cluster.voters.clone();
    let foreign = open_as(&foreign_dir, follower, &voters, Some("another-cluster")).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while foreign.foreign_peer().is_none() {
        assert!(
            Instant::now() < deadline,
            "the foreign node was not refused"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        foreign.image().topic("ours").is_none(),
        "it never got this cluster's log"
    );
    foreign.shutdown().unwrap();
    for store in cluster.stores.iter().flatten() {
        store.shutdown().unwrap();
    }
}

/// A voter whose metadata log cannot be written (its disk is full) stops its quorum thread
/// and says why ([`MetadataStore::failed`]): `sluice broker` then stops instead of serving
/// from an image that can no longer change. Runs on a small tmpfs (root, as scripts/test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_log_that_cannot_be_written_is_reported_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(dir.path())
        .status()
        .is_ok_and(|s| s.success());
    assert!(mounted, "mounting a tmpfs failed: this test runs as root");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(dir.path().to_path_buf());
    let path = dir.path().to_path_buf();
    let store = tokio::task::spawn_blocking(move || {
        Arc::new(MetadataStore::open(&path, 1, Arc::new(sluice_log::SystemClock)).unwrap())
    })
    .await
    .unwrap();
    let topic = |name: &str| MetadataRecord::CreateTopic {
        name: name.into(),
        id: Uuid::new_v4(),
        partitions: 1,
        configs: BTreeMap::new(),
    };
    let first = topic("written");
    store
        .update(|_| Ok::<_, ()>((vec![first.clone()], ())))
        .await
        .unwrap()
        .unwrap();
    // Every byte left goes to a filler file.
    {
        use std::io::Write;
        let mut filler = std::fs::File::create(dir.path().join("filler")).unwrap();
        let chunk = vec![1u8; 4096];
        while filler.write_all(&chunk).is_ok() {}
    }
    // Changes still fit while the log's last page has room; then one is refused.
    let mut written = Vec::new();
    let refused = loop {
        let name = format!("t{}", written.len());
        let record = topic(&name);
        match store
            .update(|_| Ok::<_, ()>((vec![record.clone()], ())))
            .await
        {
            Ok(_) => written.push(name),
            Err(err) => break (name, err),
        }
        assert!(
            written.len() < 10_000,
            "the full disk never refused a change"
        );
    };
    eprintln!("{} more changes fit; then: {}", written.len(), refused.1);
    let reason = tokio::time::timeout(Duration::from_secs(10), store.failed())
        .await
        .expect("the failure is reported");
    assert!(reason.contains("space"), "{reason}");
    let image = store.image();
    assert!(written.iter().all(|name| image.topic(name).is_some()));
    assert!(image.topic(&refused.0).is_none());
    assert!(image.topic("written").is_some());
}
