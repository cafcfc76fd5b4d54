//! Whatever sequence of admin requests a client sends — with odd values, and with requests
//! abandoned half-way (the client disconnects while the change is being made durable) —
//! the broker restarts, and comes back with the same metadata image and the same
//! partitions as before the restart. Property-tested on the broker's own API, with clean
//! and unclean restarts.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use futures_util::FutureExt;
use proptest::prelude::*;
use sluice_broker::controller::NewTopic;
use sluice_broker::{Broker, BrokerConfig};

const TOPICS: [&str; 3] = ["alpha", "beta", "gamma"];

#[derive(Debug, Clone)]
enum Op {
    Create {
        topic: usize,
        partitions: i32,
        config: Option<(String, String)>,
    },
    Delete(usize),
    AddPartitions(usize, i32),
    Alter(usize, String, Option<String>),
    ProducerId,
    Restart {
        clean: bool,
    },
}

/// An admin request, and whether its client gives up after the first poll.
#[derive(Debug, Clone)]
struct Step {
    op: Op,
    abandoned: bool,
}

fn config_value() -> impl Strategy<Value = (String, String)> {
    let key = prop_oneof![
        Just("retention.ms"),
        Just("cleanup.policy"),
        Just("segment.bytes"),
        Just("max.message.bytes"),
    ];
    let value = prop_oneof![
        Just("1000".to_string()),
        Just(" 86400000 ".to_string()),
        // Valid once trimmed, longer than a u16 length prefix untrimmed.
        Just(format!("1000{}", " ".repeat(70_000))),
        Just("compact , delete".to_string()),
        Just("9".repeat(80_000)),
        Just("not a number".to_string()),
        Just(String::new()),
    ];
    (key, value).prop_map(|(k, v)| (k.to_string(), v))
}

fn step() -> impl Strategy<Value = Step> {
    let topic = 0..TOPICS.len();
    let op = prop_oneof![
        4 => (topic.clone(), 1..4i32, proptest::option::of(config_value()))
            .prop_map(|(topic, partitions, config)| Op::Create { topic, partitions, config }),
        2 => topic.clone().prop_map(Op::Delete),
        2 => (topic.clone(), 1..3i32).prop_map(|(t, n)| Op::AddPartitions(t, n)),
        3 => (topic, config_value(), any::<bool>())
            .prop_map(|(t, (k, v), remove)| Op::Alter(t, k, (!remove).then_some(v))),
        1 => Just(Op::ProducerId),
        2 => any::<bool>().prop_map(|clean| Op::Restart { clean }),
    ];
    (op, proptest::bool::weighted(0.3)).prop_map(|(op, abandoned)| Step { op, abandoned })
}

fn open(dir: &Path) -> Arc<Broker> {
    let mut props = BTreeMap::new();
    props.insert("log.dirs".to_string(), dir.display().to_string());
    props.insert("log.flush.sync.threads".to_string(), "2".to_string());
    let config = BrokerConfig::from_overrides(props).expect("valid config");
    Broker::open(config).expect("the broker restarts on whatever it wrote")
}

/// Runs the request; an abandoned one is polled once and dropped, as a disconnecting
/// client's request is.
async fn run<T>(abandoned: bool, request: impl Future<Output = T>) {
    if abandoned {
        let _ = request.now_or_never();
    } else {
        let _ = request.await;
    }
}

/// Waits for every change already started to be committed and published: a change takes
/// the metadata store's writer lock, which a commit holds until it is published.
async fn settle(broker: &Broker) {
    let probe = NewTopic {
        assignments: Vec::new(),
        name: "settle".into(),
        partitions: 1,
        replication_factor: 1,
        configs: BTreeMap::new(),
    };
    let _ = broker.create_topic(probe, true).await;
}

/// What must survive a restart: the image, and the partitions actually served.
fn state(broker: &Broker) -> (String, Vec<String>) {
    let image = broker.image();
    let topics: Vec<String> = image
        .topics
        .values()
        .map(|t| format!("{} {} {} {:?}", t.name, t.id, t.partitions, t.configs))
        .collect();
    let described = format!("{topics:?} producer ids below {}", image.producer_ids_end);
    let mut served: Vec<String> = broker
        .partitions()
        .all()
        .iter()
        .map(|p| p.topic_partition().to_string())
        .collect();
    served.sort();
    let mut expected: Vec<String> = image
        .topics
        .values()
        .flat_map(|t| (0..t.partitions).map(move |p| format!("{}-{p}", t.name)))
        .collect();
    expected.sort();
    assert_eq!(served, expected, "the partitions served are the image's");
    (described, served)
}

fn run_steps(steps: &[Step]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut broker = open(dir.path());
    for step in steps {
        let b = broker.clone();
        let abandoned = step.abandoned;
        match step.op.clone() {
            Op::Create {
                topic,
                partitions,
                config,
            } => {
                let spec = NewTopic {
                    assignments: Vec::new(),
                    name: TOPICS[topic].into(),
                    partitions,
                    replication_factor: 1,
                    configs: config.into_iter().collect(),
                };
                runtime.block_on(run(abandoned, b.create_topic(spec, false)));
            }
            Op::Delete(topic) => runtime.block_on(run(abandoned, b.delete_topic(TOPICS[topic]))),
            Op::AddPartitions(topic, more) => {
                let name = TOPICS[topic];
                let count = b.image().topic(name).map_or(1, |t| t.partitions) + more;
                runtime.block_on(run(abandoned, b.create_partitions(name, count, false)));
            }
            Op::Alter(topic, key, value) => {
                let change = vec![(key, value)];
                runtime.block_on(run(
                    abandoned,
                    b.alter_topic_configs(TOPICS[topic], change, false, false),
                ));
            }
            Op::ProducerId => {
                runtime.block_on(run(abandoned, b.controller().allocate_producer_id()));
            }
            Op::Restart { clean } => {
                runtime.block_on(settle(&broker));
                let before = state(&broker);
                if clean {
                    broker.shutdown().unwrap();
                }
                drop(b);
                drop(broker);
                broker = open(dir.path());
                let after = state(&broker);
                prop_assert_eq!(before, after, "a restart changed the metadata");
            }
        }
    }
    runtime.block_on(settle(&broker));
    let before = state(&broker);
    drop(broker);
    let broker = open(dir.path());
    prop_assert_eq!(before, state(&broker));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn restarts_keep_the_metadata_whatever_was_asked(steps in proptest::collection::vec(step(), 1..25)) {
        run_steps(&steps)?;
    }
}

/// The two cases that made a broker unable to restart, on their own.
#[test]
fn an_abandoned_create_and_a_padded_config_value_survive_a_restart() {
    let create = |abandoned| Step {
        op: Op::Create {
            topic: 0,
            partitions: 2,
            config: Some(("retention.ms".into(), format!("1000{}", " ".repeat(70_000)))),
        },
        abandoned,
    };
    let steps = [
        create(true),
        create(false),
        Step {
            op: Op::ProducerId,
            abandoned: true,
        },
        Step {
            op: Op::ProducerId,
            abandoned: false,
        },
        Step {
            op: Op::Restart { clean: false },
            abandoned: false,
        },
    ];
    run_steps(&steps).unwrap();
}
