//! The metadata quorum's latency and failover, measured on this machine: three voters in
//! one process on loopback (each with its own data directory, fsyncing its Raft log, and
//! its own driver thread), Kafka's default election timeout (1 s) unless told otherwise.
//!
//! `cargo run --release -p sluice-broker --example quorum_bench -- [--changes N]
//! [--kills N] [--election-timeout-ms MS] [--single]`
//!
//! - commit latency: a topic creation (one record) from `update` to applied on the leader;
//! - failover: the leader stops (its sockets close, as when the process is killed), then
//!   the time until the two others agree on a new leader, and until a change commits on it;
//!   the old leader restarts and catches up before the next round.
//!
//! `--single` measures the commit latency of a single node's one-voter quorum instead.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_broker::metadata::{MetadataRecord, MetadataStore, QuorumSetup};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{what}: n={} p50={:.2?} p99={:.2?} max={:.2?}",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples.last().unwrap()
    );
}

struct Args {
    changes: usize,
    kills: usize,
    election_timeout: Duration,
    single: bool,
}

fn args() -> Args {
    let mut args = Args {
        changes: 500,
        kills: 20,
        election_timeout: Duration::from_millis(1000),
        single: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--single" => args.single = true,
            "--changes" => args.changes = it.next().and_then(|v| v.parse().ok()).unwrap(),
            "--kills" => args.kills = it.next().and_then(|v| v.parse().ok()).unwrap(),
            "--election-timeout-ms" => {
                args.election_timeout =
                    Duration::from_millis(it.next().and_then(|v| v.parse().ok()).unwrap());
            }
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

fn create(name: String) -> MetadataRecord {
    MetadataRecord::CreateTopic {
        name,
        id: uuid::Uuid::new_v4(),
        partitions: 1,
        configs: BTreeMap::new(),
    }
}

async fn open(
    dir: PathBuf,
    node_id: i32,
    voters: Vec<(i32, String, u16)>,
    election_timeout: Duration,
) -> Arc<MetadataStore> {
    tokio::task::spawn_blocking(move || {
        let port = voters.iter().find(|v| v.0 == node_id).unwrap().2;
        let setup = QuorumSetup {
            node_id,
            voters: voters.clone(),
            listen: format!("127.0.0.1:{port}").parse().unwrap(),
            election_timeout,
        };
        Arc::new(
            MetadataStore::open_with(
                &dir,
                1,
                Arc::new(sluice_log::SystemClock),
                node_id,
                Some(&setup),
                None,
            )
            .unwrap(),
        )
    })
    .await
    .unwrap()
}

async fn agreed_leader(stores: &[Option<Arc<MetadataStore>>]) -> i32 {
    loop {
        let seen: Vec<Option<i32>> = stores
            .iter()
            .flatten()
            .map(|s| s.quorum_status().leader)
            .collect();
        if let Some(Some(leader)) = seen.first()
            && seen.iter().all(|l| *l == Some(*leader))
            && stores[*leader as usize].is_some()
        {
            return *leader;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn commit(store: &MetadataStore, name: String) -> Result<(), String> {
    store
        .update(|_| Ok::<_, ()>((vec![create(name)], ())))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|()| "refused".to_string())?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = args();
    let root = tempfile::tempdir().unwrap();
    if args.single {
        let store = Arc::new(
            MetadataStore::open(root.path(), 1, Arc::new(sluice_log::SystemClock)).unwrap(),
        );
        let mut latencies = Vec::new();
        for i in 0..args.changes {
            let started = Instant::now();
            commit(&store, format!("t{i}")).await.unwrap();
            latencies.push(started.elapsed());
        }
        report("single voter: commit latency", latencies);
        return;
    }
    let voters: Vec<(i32, String, u16)> = (0..3)
        .map(|id| (id, "127.0.0.1".to_string(), free_port()))
        .collect();
    let dirs: Vec<PathBuf> = (0..3).map(|i| root.path().join(format!("n{i}"))).collect();
    let mut stores: Vec<Option<Arc<MetadataStore>>> = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        stores.push(Some(
            open(dir.clone(), i as i32, voters.clone(), args.election_timeout).await,
        ));
    }
    let leader = agreed_leader(&stores).await;
    let mut latencies = Vec::new();
    for i in 0..args.changes {
        let started = Instant::now();
        commit(stores[leader as usize].as_ref().unwrap(), format!("t{i}"))
            .await
            .unwrap();
        latencies.push(started.elapsed());
    }
    report("3 voters: commit latency", latencies);

    let (mut elected, mut first_write) = (Vec::new(), Vec::new());
    for round in 0..args.kills {
        let leader = agreed_leader(&stores).await;
        let old = stores[leader as usize].take().unwrap();
        let killed = Instant::now();
        old.shutdown().unwrap();
        drop(old);
        let new_leader = agreed_leader(&stores).await;
        elected.push(killed.elapsed());
        loop {
            let store = stores[new_leader as usize].as_ref().unwrap();
            if commit(store, format!("after-kill-{round}")).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        first_write.push(killed.elapsed());
        stores[leader as usize] = Some(
            open(
                dirs[leader as usize].clone(),
                leader,
                voters.clone(),
                args.election_timeout,
            )
            .await,
        );
        // The returning voter catches up before the next round.
        let target = stores[new_leader as usize]
            .as_ref()
            .unwrap()
            .quorum_status()
            .commit_index;
        while stores[leader as usize]
            .as_ref()
            .unwrap()
            .quorum_status()
            .applied
            < target
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    report("3 voters: leader stop -> new leader agreed", elected);
    report(
        "3 voters: leader stop -> first change committed",
        first_write,
    );
    for store in stores.into_iter().flatten() {
        store.shutdown().unwrap();
    }
}
