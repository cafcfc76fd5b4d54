//! `sluice cluster info|describe|config`: the cluster id, controller and brokers
//! (DescribeCluster, or Metadata where a broker lacks it), with `describe` the metadata
//! quorum too (DescribeQuorum: leader, epoch, high watermark, each voter's log end and lag),
//! and a broker's configuration (DescribeConfigs and IncrementalAlterConfigs on the broker
//! resource, with the broker's answer for each key).

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    ApiKey, DescribeClusterRequest, DescribeClusterResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, DescribeQuorumRequest, DescribeQuorumResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, MetadataRequest,
    MetadataResponse, TopicName, describe_quorum_request,
};
use kafka_protocol::protocol::StrBytes;

use super::wire::{Wire, failure};
use super::{Connection, OutputFormat, Report, parse_pairs};

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Cluster id, controller and brokers.
    #[command(after_help = "Examples:\n  sluice cluster info\n  sluice cluster info --format json")]
    Info {
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
        #[command(flatten)]
        connection: Connection,
    },
    /// Cluster id, controller and brokers, and the metadata quorum: its leader (the active
    /// controller), epoch, high watermark and each voter's lag.
    #[command(after_help = "Examples:
  sluice cluster describe
  sluice cluster describe --format json")]
    Describe {
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
        #[command(flatten)]
        connection: Connection,
    },
    /// A broker's configuration: get every property, or set some.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Every property of a broker, with its value and source.
    #[command(
        after_help = "Examples:\n  sluice cluster config get\n  sluice cluster config get --broker 2 --format json"
    )]
    Get {
        /// The broker's node id (default: the one the bootstrap server names, else 1).
        #[arg(long)]
        broker: Option<i32>,
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
        #[command(flatten)]
        connection: Connection,
    },
    /// Change properties of a broker (the broker says which it accepts: a Sluice broker's
    /// configuration is static and refuses, with its reason).
    #[command(
        after_help = "Examples:\n  sluice cluster config set --config log.retention.ms=3600000"
    )]
    Set {
        #[arg(long)]
        broker: Option<i32>,
        /// KEY=VALUE; repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE", required = true)]
        configs: Vec<String>,
        #[command(flatten)]
        connection: Connection,
    },
}

/// The broker resource type in DescribeConfigs and IncrementalAlterConfigs.
const BROKER_RESOURCE: i8 = 4;

pub fn run(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Info { format, connection } => info(&connection, format, false),
        ClusterCommand::Describe { format, connection } => info(&connection, format, true),
        ClusterCommand::Config(ConfigCommand::Get {
            broker,
            format,
            connection,
        }) => config_get(&connection, broker, format),
        ClusterCommand::Config(ConfigCommand::Set {
            broker,
            configs,
            connection,
        }) => config_set(&connection, broker, &configs),
    }
}

fn info(connection: &Connection, format: OutputFormat, quorum: bool) -> anyhow::Result<()> {
    let mut wire = Wire::connect(&connection.bootstrap)?;
    let (cluster_id, controller, brokers) = match wire.call::<_, DescribeClusterResponse>(
        ApiKey::DescribeCluster,
        0..=1,
        &DescribeClusterRequest::default(),
    ) {
        Ok((_, response)) => {
            if let Some(why) = failure(response.error_code, response.error_message.as_ref()) {
                anyhow::bail!("cannot describe the cluster: {why}");
            }
            let brokers: Vec<(i32, String, i32, Option<String>)> = response
                .brokers
                .iter()
                .map(|b| {
                    (
                        b.broker_id.0,
                        b.host.to_string(),
                        b.port,
                        b.rack.as_ref().map(|r| r.to_string()),
                    )
                })
                .collect();
            (
                response.cluster_id.to_string(),
                response.controller_id.0,
                brokers,
            )
        }
        // Brokers older than Kafka 2.8 answer Metadata only.
        Err(_) => {
            let (_, response): (_, MetadataResponse) = wire.call(
                ApiKey::Metadata,
                1..=12,
                &MetadataRequest::default().with_topics(Some(Vec::new())),
            )?;
            let brokers = response
                .brokers
                .iter()
                .map(|b| {
                    (
                        b.node_id.0,
                        b.host.to_string(),
                        b.port,
                        b.rack.as_ref().map(|r| r.to_string()),
                    )
                })
                .collect();
            (
                response
                    .cluster_id
                    .map(|c| c.to_string())
                    .unwrap_or_default(),
                response.controller_id.0,
                brokers,
            )
        }
    };
    let rows = brokers
        .iter()
        .map(|(id, host, port, rack)| {
            vec![
                id.to_string(),
                host.clone(),
                port.to_string(),
                rack.clone().unwrap_or_else(|| "-".into()),
                if *id == controller {
                    "yes".into()
                } else {
                    "-".into()
                },
            ]
        })
        .collect();
    let mut report = Report::default();
    report
        .title(format!(
            "cluster {cluster_id}: {} broker(s), controller {controller}",
            brokers.len()
        ))
        .field("cluster_id", cluster_id.clone())
        .field("controller", controller)
        .table(
            "brokers",
            &["ID", "HOST", "PORT", "RACK", "CONTROLLER"],
            rows,
        );
    if quorum {
        // The quorum's state is the active controller's to tell: ask it directly.
        let mut at_controller = brokers
            .iter()
            .find(|(id, ..)| *id == controller)
            .and_then(|(_, host, port, _)| Wire::connect(&format!("{host}:{port}")).ok());
        describe_quorum(at_controller.as_mut().unwrap_or(&mut wire), &mut report)?;
    }
    report.print(format);
    Ok(())
}

/// Adds the metadata quorum (`__cluster_metadata-0`) to `report`.
fn describe_quorum(wire: &mut Wire, report: &mut Report) -> anyhow::Result<()> {
    let request = DescribeQuorumRequest::default().with_topics(vec![
        describe_quorum_request::TopicData::default()
            .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
            .with_partitions(vec![
                describe_quorum_request::PartitionData::default().with_partition_index(0),
            ]),
    ]);
    let (_, response): (_, DescribeQuorumResponse) =
        wire.call(ApiKey::DescribeQuorum, 0..=2, &request)?;
    if let Some(why) = failure(response.error_code, response.error_message.as_ref()) {
        anyhow::bail!("cannot describe the quorum: {why}");
    }
    let Some(partition) = response.topics.first().and_then(|t| t.partitions.first()) else {
        anyhow::bail!("the broker described no quorum");
    };
    if let Some(why) = failure(partition.error_code, partition.error_message.as_ref()) {
        anyhow::bail!(
            "cannot describe the quorum: {why} (leader: {})",
            partition.leader_id.0
        );
    }
    let high_watermark = partition.high_watermark;
    let leader_end = partition
        .current_voters
        .iter()
        .find(|v| v.replica_id == partition.leader_id)
        .map_or(high_watermark, |v| v.log_end_offset);
    let rows = partition
        .current_voters
        .iter()
        .map(|v| {
            vec![
                v.replica_id.0.to_string(),
                v.log_end_offset.to_string(),
                (leader_end - v.log_end_offset).max(0).to_string(),
                if v.replica_id == partition.leader_id {
                    "leader".into()
                } else {
                    "follower".into()
                },
            ]
        })
        .collect();
    report
        .field("quorum_leader", partition.leader_id.0)
        .field("quorum_epoch", partition.leader_epoch)
        .field("quorum_high_watermark", high_watermark)
        .footer(format!(
            "quorum: leader {}, epoch {}, high watermark {high_watermark}",
            partition.leader_id.0, partition.leader_epoch
        ))
        .table("voters", &["VOTER", "LOG END", "LAG", "ROLE"], rows);
    Ok(())
}

/// The broker to ask about: the one named, else the first the cluster lists.
fn broker_id(wire: &mut Wire, asked: Option<i32>) -> anyhow::Result<i32> {
    if let Some(id) = asked {
        return Ok(id);
    }
    let (_, response): (_, MetadataResponse) = wire.call(
        ApiKey::Metadata,
        1..=12,
        &MetadataRequest::default().with_topics(Some(Vec::new())),
    )?;
    Ok(response.brokers.first().map_or(1, |b| b.node_id.0))
}

fn config_get(
    connection: &Connection,
    broker: Option<i32>,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let mut wire = Wire::connect(&connection.bootstrap)?;
    let id = broker_id(&mut wire, broker)?;
    let request = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(BROKER_RESOURCE)
            .with_resource_name(StrBytes::from_string(id.to_string()))
            .with_configuration_keys(None),
    ]);
    let (_, response): (_, DescribeConfigsResponse) =
        wire.call(ApiKey::DescribeConfigs, 1..=4, &request)?;
    let result = response
        .results
        .first()
        .ok_or_else(|| anyhow::anyhow!("the broker answered for no resource"))?;
    if let Some(why) = failure(result.error_code, result.error_message.as_ref()) {
        anyhow::bail!("cannot describe broker {id}'s configuration: {why}");
    }
    let mut rows: Vec<Vec<String>> = result
        .configs
        .iter()
        .map(|c| {
            vec![
                c.name.to_string(),
                c.value
                    .as_ref()
                    .map_or_else(|| "-".into(), |v| v.to_string()),
                source_name(c.config_source).into(),
            ]
        })
        .collect();
    rows.sort();
    Report::default()
        .title(format!("broker {id}"))
        .field("broker", id)
        .table("configs", &["CONFIG", "VALUE", "SOURCE"], rows)
        .print(format);
    Ok(())
}

fn source_name(source: i8) -> &'static str {
    match source {
        1 => "dynamic topic",
        2 => "dynamic broker",
        3 => "dynamic default broker",
        4 => "static broker",
        5 => "default",
        6 => "dynamic broker logger",
        _ => "unknown",
    }
}

fn config_set(
    connection: &Connection,
    broker: Option<i32>,
    configs: &[String],
) -> anyhow::Result<()> {
    let pairs = parse_pairs(configs, "--config")?;
    let mut wire = Wire::connect(&connection.bootstrap)?;
    let id = broker_id(&mut wire, broker)?;
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(BROKER_RESOURCE)
            .with_resource_name(StrBytes::from_string(id.to_string()))
            .with_configs(
                pairs
                    .iter()
                    .map(|(k, v)| {
                        AlterableConfig::default()
                            .with_name(StrBytes::from_string(k.clone()))
                            .with_config_operation(0)
                            .with_value(Some(StrBytes::from_string(v.clone())))
                    })
                    .collect(),
            ),
    ]);
    let (_, response): (_, IncrementalAlterConfigsResponse) =
        wire.call(ApiKey::IncrementalAlterConfigs, 0..=1, &request)?;
    for result in &response.responses {
        if let Some(why) = failure(result.error_code, result.error_message.as_ref()) {
            anyhow::bail!("cannot change broker {id}'s configuration: {why}");
        }
    }
    crate::say!("broker {id} configuration updated");
    Ok(())
}
