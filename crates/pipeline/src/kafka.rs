//! What the gateway and the sink share about the cluster: client settings and topic creation.
//! Only the Kafka protocol through librdkafka, so any Kafka-compatible cluster works.

use std::time::Duration;

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

/// A client configuration for `bootstrap`, with `overrides` (librdkafka property names)
/// applied last.
pub fn client_config(
    bootstrap: &str,
    client_id: &str,
    overrides: &[(String, String)],
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("client.id", client_id)
        .set("socket.connection.setup.timeout.ms", "5000");
    for (key, value) in overrides {
        config.set(key, value);
    }
    config
}

/// Creates the topics that do not exist yet (replication factor: the cluster's default).
/// Existing topics are left as they are, whatever their partition count.
pub async fn ensure_topics(
    bootstrap: &str,
    overrides: &[(String, String)],
    topics: &[(&str, i32)],
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(bootstrap, "sluice-pipeline-admin", overrides)
            .create()
            .context("cannot create a Kafka admin client")?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(-1)))
        .collect();
    let options = AdminOptions::new()
        .request_timeout(Some(Duration::from_secs(15)))
        .operation_timeout(Some(Duration::from_secs(15)));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .with_context(|| format!("cannot reach the cluster at {bootstrap}"))?;
    for result in results {
        match result {
            Ok(name) => tracing::info!(topic = %name, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("cannot create topic {name}: {code}"),
        }
    }
    Ok(())
}

/// The topic's `max.message.bytes`, or `None` if the cluster does not say.
pub async fn max_message_bytes(
    bootstrap: &str,
    overrides: &[(String, String)],
    topic: &str,
) -> Option<usize> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(bootstrap, "sluice-pipeline-admin", overrides)
            .create()
            .ok()?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(15)));
    let results = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
        .await
        .ok()?;
    let resource = results.into_iter().next()?.ok()?;
    resource
        .get("max.message.bytes")?
        .value
        .as_deref()?
        .parse()
        .ok()
}

/// Refuses user properties that would break a guarantee the pipeline gives (`reserved`
/// are set by the pipeline itself).
pub fn check_not_reserved(
    properties: &[(String, String)],
    reserved: &[&str],
) -> anyhow::Result<()> {
    for (key, _) in properties {
        if reserved.contains(&key.as_str()) {
            anyhow::bail!(
                "{key} cannot be overridden: the pipeline's guarantees depend on it (reserved: {})",
                reserved.join(", ")
            );
        }
    }
    Ok(())
}

/// `KEY=VALUE` pairs from the command line.
pub fn parse_properties(pairs: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    pairs
        .iter()
        .map(|pair| {
            let (key, value) = pair
                .split_once('=')
                .with_context(|| format!("{pair:?}: expected KEY=VALUE"))?;
            Ok((key.trim().to_string(), value.trim().to_string()))
        })
        .collect()
}
