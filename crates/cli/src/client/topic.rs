//! `sluice topic create|list|describe|alter|delete`.

use std::collections::BTreeMap;

use anyhow::Context;
use rdkafka::admin::{AlterConfig, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::Consumer;

use super::{Connection, TIMEOUT, admin_options, block_on, parse_pairs, print_table};

#[derive(Debug, clap::Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    #[command(
        after_help = "Examples:\n  sluice topic create orders --partitions 6\n  sluice topic create users --config cleanup.policy=compact --config segment.bytes=104857600"
    )]
    Create {
        name: String,
        #[arg(long, short, default_value_t = 1)]
        partitions: i32,
        #[arg(long, short = 'r', default_value_t = 1)]
        replication_factor: i32,
        /// Topic config, KEY=VALUE; repeatable.
        #[arg(long = "config", short = 'c', value_name = "KEY=VALUE")]
        configs: Vec<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// List topics with their partition counts.
    List {
        /// Include internal topics such as __consumer_offsets.
        #[arg(long)]
        internal: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// Partitions (leader, replicas, offsets) and configs of a topic.
    Describe {
        name: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Add partitions or change configs.
    #[command(
        after_help = "Examples:\n  sluice topic alter orders --partitions 12\n  sluice topic alter orders --config retention.ms=3600000 --delete-config segment.ms"
    )]
    Alter {
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
    /// Delete topics.
    Delete {
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
            let admin = connection.admin()?;
            let mut topic = NewTopic::new(
                &name,
                partitions,
                TopicReplication::Fixed(replication_factor),
            );
            for (k, v) in &configs {
                topic = topic.set(k, v);
            }
            let results = block_on(admin.create_topics(&[topic], &admin_options()))?
                .map_err(|e| unreachable(&connection, &e))?;
            for result in results {
                result.map_err(|(name, code)| {
                    anyhow::anyhow!("cannot create topic {name}: {code}")
                })?;
            }
            crate::say!("created topic {name} with {partitions} partition(s)");
            Ok(())
        }
        TopicCommand::List {
            internal,
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
            print_table(&["TOPIC", "PARTITIONS"], &rows);
            Ok(())
        }
        TopicCommand::Describe { name, connection } => describe(&connection, &name),
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
            let admin = connection.admin()?;
            if let Some(count) = partitions {
                let results = block_on(
                    admin.create_partitions(&[NewPartitions::new(&name, count)], &admin_options()),
                )?
                .map_err(|e| unreachable(&connection, &e))?;
                for result in results {
                    result.map_err(|(name, code)| {
                        anyhow::anyhow!("cannot change partitions of {name}: {code}")
                    })?;
                }
                crate::say!("topic {name} now has {count} partitions");
            }
            if !configs.is_empty() || !delete_configs.is_empty() {
                // AlterConfigs replaces a topic's whole override set: start from the current
                // overrides so that the others survive.
                let mut overrides = topic_overrides(&connection, &name)?;
                for key in &delete_configs {
                    overrides.remove(key);
                }
                overrides.extend(configs);
                let mut alter = AlterConfig::new(ResourceSpecifier::Topic(&name));
                for (k, v) in &overrides {
                    alter = alter.set(k, v);
                }
                let results = block_on(admin.alter_configs(&[alter], &admin_options()))?
                    .map_err(|e| unreachable(&connection, &e))?;
                for result in results {
                    result.map_err(|(_, code)| {
                        anyhow::anyhow!("cannot alter configs of {name}: {code}")
                    })?;
                }
                crate::say!("topic {name} configs updated");
            }
            Ok(())
        }
        TopicCommand::Delete { names, connection } => {
            let admin = connection.admin()?;
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let results = block_on(admin.delete_topics(&refs, &admin_options()))?
                .map_err(|e| unreachable(&connection, &e))?;
            let mut failed = 0;
            for result in results {
                match result {
                    Ok(name) => crate::say!("deleted topic {name}"),
                    Err((name, code)) => {
                        eprintln!("error: cannot delete topic {name}: {code}");
                        failed += 1;
                    }
                }
            }
            anyhow::ensure!(failed == 0, "{failed} topic(s) not deleted");
            Ok(())
        }
    }
}

fn unreachable(connection: &Connection, err: &rdkafka::error::KafkaError) -> anyhow::Error {
    anyhow::anyhow!("cannot reach a broker at {}: {err}", connection.bootstrap)
}

/// The topic's config overrides (values set on the topic itself).
fn topic_overrides(
    connection: &Connection,
    name: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    Ok(topic_configs(connection, name)?
        .into_iter()
        .filter(|(_, (_, dynamic))| *dynamic)
        .map(|(k, (v, _))| (k, v))
        .collect())
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

fn describe(connection: &Connection, name: &str) -> anyhow::Result<()> {
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
    for p in topic.partitions() {
        let (low, high) = consumer
            .fetch_watermarks(name, p.id(), TIMEOUT)
            .with_context(|| format!("offsets of {name}-{}", p.id()))?;
        total += high - low;
        rows.push(vec![
            p.id().to_string(),
            p.leader().to_string(),
            format!("{:?}", p.replicas()),
            format!("{:?}", p.isr()),
            low.to_string(),
            high.to_string(),
            sizes.get(&p.id()).map_or("-".into(), i64::to_string),
        ]);
    }
    crate::say!(
        "topic {name}: {} partition(s), {total} offset(s) in the log",
        topic.partitions().len()
    );
    print_table(
        &[
            "PARTITION",
            "LEADER",
            "REPLICAS",
            "ISR",
            "START OFFSET",
            "END OFFSET",
            "SIZE (BYTES)",
        ],
        &rows,
    );
    crate::say!();
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
    print_table(&["CONFIG", "VALUE", "SET ON"], &configs);
    Ok(())
}
