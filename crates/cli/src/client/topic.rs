//! `sluice topic create|list|describe|alter|reassign|elect-leaders|delete`.

use std::collections::BTreeMap;

use anyhow::Context;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    ApiKey, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::ResourceSpecifier;
use rdkafka::consumer::Consumer;

use super::wire::{Wire, failure};
use super::{Connection, OutputFormat, Report, TIMEOUT, admin_options, block_on, parse_pairs};

#[derive(Debug, clap::Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    #[command(
        after_help = "Examples:\n  sluice topic create orders --partitions 6\n  sluice topic create users --config cleanup.policy=compact --config segment.bytes=104857600"
    )]
    Create {
        /// The topic's name (letters, digits, '.', '_' and '-', at most 249 characters).
        name: String,
        /// How many partitions.
        #[arg(long, short, default_value_t = 1)]
        partitions: i32,
        /// How many copies of each partition (at most the number of brokers).
        #[arg(long, short = 'r', default_value_t = 1)]
        replication_factor: i32,
        /// Topic config, KEY=VALUE; repeatable.
        #[arg(long = "config", short = 'c', value_name = "KEY=VALUE")]
        configs: Vec<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// List topics with their partition counts.
    #[command(
        after_help = "Examples:\n  sluice topic list\n  sluice topic list --internal --format json"
    )]
    List {
        /// Include internal topics such as __consumer_offsets.
        #[arg(long)]
        internal: bool,
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
        #[command(flatten)]
        connection: Connection,
    },
    /// Partitions (leader, replicas, offsets) and configs of a topic.
    #[command(
        after_help = "Examples:\n  sluice topic describe orders\n  sluice topic describe orders --format json | jq '.partitions[].end_offset'"
    )]
    Describe {
        /// The topic to describe.
        name: String,
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
        #[command(flatten)]
        connection: Connection,
    },
    /// Add partitions or change configs.
    #[command(
        after_help = "Examples:\n  sluice topic alter orders --partitions 12\n  sluice topic alter orders --config retention.ms=3600000 --delete-config segment.ms"
    )]
    Alter {
        /// The topic to change.
        name: String,
        /// New (larger) partition count.
        #[arg(long, short)]
        partitions: Option<usize>,
        /// Config to set, KEY=VALUE; repeatable.
        #[arg(long = "config", short = 'c', value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// Config override to remove (back to the broker default); repeatable.
        #[arg(long = "delete-config", value_name = "KEY")]
        delete_configs: Vec<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Move partitions to other brokers online (or cancel a move): the new replicas copy
    /// the leader, the old ones go once every new one is in sync.
    #[command(
        after_help = "Examples:\n  sluice topic reassign orders --partition 0 --replicas 2,3,4 --wait\n  sluice topic reassign orders --partition 0 --cancel"
    )]
    Reassign {
        /// The topic whose partitions move.
        name: String,
        /// A partition to move; repeatable.
        #[arg(long = "partition", short = 'p', required = true)]
        partitions: Vec<i32>,
        /// The broker ids the partitions move to, comma-separated (the first is preferred
        /// leader).
        #[arg(long, conflicts_with = "cancel", required_unless_present = "cancel")]
        replicas: Option<String>,
        /// Cancel the move in progress (back to the replicas it started from).
        #[arg(long)]
        cancel: bool,
        /// Wait until the moves are done (at most this many seconds, default 300).
        #[arg(long, num_args = 0..=1, default_missing_value = "300", value_name = "SECONDS")]
        wait: Option<u64>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Move partitions' leadership back to their preferred (first) replica.
    #[command(
        after_help = "Examples:\n  sluice topic elect-leaders orders\n  sluice topic elect-leaders orders --partition 3"
    )]
    ElectLeaders {
        /// The topic.
        name: String,
        /// A partition (default: all); repeatable.
        #[arg(long = "partition", short = 'p')]
        partitions: Vec<i32>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Delete topics.
    #[command(
        after_help = "Examples:\n  sluice topic delete orders\n  sluice topic delete old-1 old-2"
    )]
    Delete {
        /// The topics to delete.
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        connection: Connection,
    },
}

pub fn run(command: TopicCommand) -> anyhow::Result<()> {
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            connection,
        } => {
            let configs = parse_pairs(&configs, "--config")?;
            let mut wire = Wire::connect(&connection.bootstrap)?;
            let request = CreateTopicsRequest::default()
                .with_timeout_ms(30_000)
                .with_topics(vec![
                    CreatableTopic::default()
                        .with_name(TopicName(StrBytes::from_string(name.clone())))
                        .with_num_partitions(partitions)
                        .with_replication_factor(
                            i16::try_from(replication_factor)
                                .context("--replication-factor is too large")?,
                        )
                        .with_configs(
                            configs
                                .iter()
                                .map(|(k, v)| {
                                    CreatableTopicConfig::default()
                                        .with_name(StrBytes::from_string(k.clone()))
                                        .with_value(Some(StrBytes::from_string(v.clone())))
                                })
                                .collect(),
                        ),
                ]);
            let (_, response): (_, CreateTopicsResponse) =
                wire.call(ApiKey::CreateTopics, 2..=7, &request)?;
            for topic in &response.topics {
                if let Some(why) = failure(topic.error_code, topic.error_message.as_ref()) {
                    anyhow::bail!("cannot create topic {}: {why}", &*topic.name.0);
                }
            }
            crate::say!("created topic {name} with {partitions} partition(s)");
            Ok(())
        }
        TopicCommand::List {
            internal,
            format,
            connection,
        } => {
            let consumer = connection.query_consumer(None)?;
            let metadata = connection.metadata(&consumer, None)?;
            let mut rows: Vec<Vec<String>> = metadata
                .topics()
                .iter()
                .filter(|t| internal || !t.name().starts_with("__"))
                .map(|t| vec![t.name().to_string(), t.partitions().len().to_string()])
                .collect();
            rows.sort();
            Report::default()
                .table("topics", &["TOPIC", "PARTITIONS"], rows)
                .print(format);
            Ok(())
        }
        TopicCommand::Describe {
            name,
            format,
            connection,
        } => describe(&connection, &name, format),
        TopicCommand::Alter {
            name,
            partitions,
            configs,
            delete_configs,
            connection,
        } => {
            anyhow::ensure!(
                partitions.is_some() || !configs.is_empty() || !delete_configs.is_empty(),
                "nothing to alter: give --partitions, --config or --delete-config"
            );
            let configs = parse_pairs(&configs, "--config")?;
            let mut wire = Wire::connect(&connection.bootstrap)?;
            if let Some(count) = partitions {
                let request = CreatePartitionsRequest::default()
                    .with_timeout_ms(30_000)
                    .with_topics(vec![
                        CreatePartitionsTopic::default()
                            .with_name(TopicName(StrBytes::from_string(name.clone())))
                            .with_count(i32::try_from(count).context("--partitions is too large")?)
                            .with_assignments(None),
                    ]);
                let (_, response): (_, CreatePartitionsResponse) =
                    wire.call(ApiKey::CreatePartitions, 0..=3, &request)?;
                for result in &response.results {
                    if let Some(why) = failure(result.error_code, result.error_message.as_ref()) {
                        anyhow::bail!("cannot change partitions of {name}: {why}");
                    }
                }
                crate::say!("topic {name} now has {count} partitions");
            }
            if !configs.is_empty() || !delete_configs.is_empty() {
                // Incremental: only the named keys change, and the broker answers for the
                // topic as a whole (nothing is applied if any key is refused).
                let set = configs.iter().map(|(k, v)| {
                    AlterableConfig::default()
                        .with_name(StrBytes::from_string(k.clone()))
                        .with_config_operation(SET)
                        .with_value(Some(StrBytes::from_string(v.clone())))
                });
                let delete = delete_configs.iter().map(|k| {
                    AlterableConfig::default()
                        .with_name(StrBytes::from_string(k.clone()))
                        .with_config_operation(DELETE)
                        .with_value(None)
                });
                let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
                    AlterConfigsResource::default()
                        .with_resource_type(TOPIC_RESOURCE)
                        .with_resource_name(StrBytes::from_string(name.clone()))
                        .with_configs(set.chain(delete).collect()),
                ]);
                let (_, response): (_, IncrementalAlterConfigsResponse) =
                    wire.call(ApiKey::IncrementalAlterConfigs, 0..=1, &request)?;
                for result in &response.responses {
                    if let Some(why) = failure(result.error_code, result.error_message.as_ref()) {
                        anyhow::bail!("cannot alter configs of {name}: {why}");
                    }
                }
                crate::say!("topic {name} configs updated");
            }
            Ok(())
        }
        TopicCommand::Reassign {
            name,
            partitions,
            replicas,
            cancel,
            wait,
            connection,
        } => {
            let replicas = match (replicas, cancel) {
                (Some(text), false) => Some(super::reassign::parse_replicas(&text)?),
                _ => None,
            };
            let wait = wait.map(std::time::Duration::from_secs);
            super::reassign::reassign(&connection, &name, &partitions, replicas.as_deref(), wait)
        }
        TopicCommand::ElectLeaders {
            name,
            partitions,
            connection,
        } => super::reassign::elect_leaders(&connection, &name, &partitions),
        TopicCommand::Delete { names, connection } => {
            let mut wire = Wire::connect(&connection.bootstrap)?;
            let topic_names: Vec<TopicName> = names
                .iter()
                .map(|n| TopicName(StrBytes::from_string(n.clone())))
                .collect();
            // v6 names topics in `topics`, older versions in `topic_names`: fill both.
            let request = DeleteTopicsRequest::default()
                .with_timeout_ms(30_000)
                .with_topic_names(topic_names.clone())
                .with_topics(
                    topic_names
                        .iter()
                        .map(|n| DeleteTopicState::default().with_name(Some(n.clone())))
                        .collect(),
                );
            let (_, response): (_, DeleteTopicsResponse) =
                wire.call(ApiKey::DeleteTopics, 1..=6, &request)?;
            let mut failed = 0;
            for result in &response.responses {
                let topic = result.name.as_ref().map_or("?", |n| n.0.as_str());
                match failure(result.error_code, result.error_message.as_ref()) {
                    None => crate::say!("deleted topic {topic}"),
                    Some(why) => {
                        eprintln!("error: cannot delete topic {topic}: {why}");
                        failed += 1;
                    }
                }
            }
            anyhow::ensure!(failed == 0, "{failed} topic(s) not deleted");
            Ok(())
        }
    }
}

/// IncrementalAlterConfigs operations and the topic resource type.
const SET: i8 = 0;
const DELETE: i8 = 1;
const TOPIC_RESOURCE: i8 = 2;

fn unreachable(connection: &Connection, err: &rdkafka::error::KafkaError) -> anyhow::Error {
    anyhow::anyhow!("cannot reach a broker at {}: {err}", connection.bootstrap)
}

/// Every config of a topic: value and whether it is set on the topic.
fn topic_configs(
    connection: &Connection,
    name: &str,
) -> anyhow::Result<BTreeMap<String, (String, bool)>> {
    let admin = connection.admin()?;
    let results =
        block_on(admin.describe_configs(&[ResourceSpecifier::Topic(name)], &admin_options()))?
            .map_err(|e| unreachable(connection, &e))?;
    let resource = results
        .into_iter()
        .next()
        .context("no answer to DescribeConfigs")?
        .map_err(|code| anyhow::anyhow!("cannot describe topic {name}: {code}"))?;
    Ok(resource
        .entries
        .into_iter()
        .map(|e| {
            let dynamic = matches!(e.source, rdkafka::admin::ConfigSource::DynamicTopic);
            (e.name, (e.value.unwrap_or_default(), dynamic))
        })
        .collect())
}

fn describe(connection: &Connection, name: &str, format: OutputFormat) -> anyhow::Result<()> {
    let consumer = connection.query_consumer(None)?;
    let metadata = connection.metadata(&consumer, Some(name))?;
    let topic = metadata
        .topics()
        .iter()
        .find(|t| t.name() == name)
        .with_context(|| format!("unknown topic {name}"))?;
    if let Some(err) = topic.error() {
        anyhow::bail!("unknown topic {name} ({err:?})");
    }
    anyhow::ensure!(!topic.partitions().is_empty(), "unknown topic {name}");
    // Sizes from each partition's leader; "-" where the cluster does not answer
    // DescribeLogDirs.
    let mut sizes = BTreeMap::new();
    for broker in metadata.brokers() {
        if let Ok(found) = super::log_dirs::partition_sizes(broker.host(), broker.port(), name) {
            for (partition, size) in found {
                let leads = topic
                    .partitions()
                    .iter()
                    .any(|p| p.id() == partition && p.leader() == broker.id());
                if leads {
                    sizes.insert(partition, size);
                }
            }
        }
    }
    let mut rows = Vec::new();
    let mut total = 0i64;
    let mut offline = 0usize;
    for p in topic.partitions() {
        // A partition without a leader (its broker is down) has no offsets to tell.
        let (low, high) = if p.leader() < 0 {
            offline += 1;
            ("-".to_string(), "-".to_string())
        } else {
            let (low, high) = consumer
                .fetch_watermarks(name, p.id(), TIMEOUT)
                .with_context(|| format!("offsets of {name}-{}", p.id()))?;
            total += high - low;
            (low.to_string(), high.to_string())
        };
        rows.push(vec![
            p.id().to_string(),
            if p.leader() < 0 {
                "none".to_string()
            } else {
                p.leader().to_string()
            },
            format!("{:?}", p.replicas()),
            format!("{:?}", p.isr()),
            low,
            high,
            sizes.get(&p.id()).map_or("-".into(), i64::to_string),
        ]);
    }
    let mut report = Report::default();
    report
        .title(format!(
            "topic {name}: {} partition(s){}, {total} offset(s) in the log",
            topic.partitions().len(),
            if offline > 0 {
                format!(" ({offline} offline: no leader)")
            } else {
                String::new()
            }
        ))
        .field("topic", name)
        .field("partition_count", topic.partitions().len())
        .field("offline_partitions", offline)
        .field("offsets", total)
        .table(
            "partitions",
            &[
                "PARTITION",
                "LEADER",
                "REPLICAS",
                "ISR",
                "START OFFSET",
                "END OFFSET",
                "SIZE (BYTES)",
            ],
            rows,
        );
    let configs: Vec<Vec<String>> = topic_configs(connection, name)?
        .into_iter()
        .map(|(k, (v, dynamic))| {
            vec![
                k,
                v,
                if dynamic {
                    "topic".into()
                } else {
                    "default".into()
                },
            ]
        })
        .collect();
    report
        .table("configs", &["CONFIG", "VALUE", "SET ON"], configs)
        .print(format);
    Ok(())
}
