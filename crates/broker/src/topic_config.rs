//! Topic-level configuration: the properties a topic may override, their broker-wide
//! defaults, validation, and the [`LogConfig`] they produce.

use std::collections::BTreeMap;

use sluice_log::{CleanupPolicy, LogConfig};
use sluice_record::TimestampType;

use crate::config::{BrokerConfig, parse_timestamp_type};

/// Topic property, the broker property that gives its default.
pub const TOPIC_PROPERTIES: &[(&str, &str)] = &[
    ("cleanup.policy", "log.cleanup.policy"),
    ("compression.type", ""),
    ("delete.retention.ms", "log.cleaner.delete.retention.ms"),
    ("index.interval.bytes", "log.index.interval.bytes"),
    ("max.compaction.lag.ms", "log.cleaner.max.compaction.lag.ms"),
    ("max.message.bytes", "message.max.bytes"),
    ("message.timestamp.type", "log.message.timestamp.type"),
    (
        "message.timestamp.before.max.ms",
        "log.message.timestamp.before.max.ms",
    ),
    (
        "message.timestamp.after.max.ms",
        "log.message.timestamp.after.max.ms",
    ),
    (
        "min.cleanable.dirty.ratio",
        "log.cleaner.min.cleanable.ratio",
    ),
    ("min.compaction.lag.ms", "log.cleaner.min.compaction.lag.ms"),
    ("min.insync.replicas", "min.insync.replicas"),
    ("retention.bytes", "log.retention.bytes"),
    ("retention.ms", "log.retention.ms"),
    ("segment.bytes", "log.segment.bytes"),
    ("segment.index.bytes", "log.index.size.max.bytes"),
    ("segment.ms", "log.roll.ms"),
    (
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
    ),
];

/// Where a described value comes from (Kafka's `ConfigSource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    DynamicTopic = 1,
    StaticBroker = 4,
    Default = 5,
}

/// Checks one topic property and returns it in the canonical form it is stored in (numbers
/// without whitespace or leading zeros, policies in Kafka's spelling), so that what is
/// stored is short and reads back as it was validated. The message names the problem for
/// the client.
pub fn validate(key: &str, value: &str) -> Result<String, String> {
    let int = |min: i64, max: i64| -> Result<String, String> {
        match value.trim().parse::<i64>() {
            Ok(v) if (min..=max).contains(&v) => Ok(v.to_string()),
            Ok(v) => Err(format!("{key} must be in [{min}, {max}], got {v}")),
            Err(_) => Err(format!("{key} must be an integer, got {}", shown(value))),
        }
    };
    match key {
        "cleanup.policy" => CleanupPolicy::parse(value)
            .map(|p| match (p.compact, p.delete) {
                (true, true) => "compact,delete".to_string(),
                (true, false) => "compact".to_string(),
                _ => "delete".to_string(),
            })
            .map_err(|e| e.to_string()),
        "compression.type" => match value.trim() {
            "producer" => Ok("producer".to_string()),
            _ => Err(
                "compression.type: only \"producer\" is supported (batches are stored as sent)"
                    .into(),
            ),
        },
        "delete.retention.ms" | "min.compaction.lag.ms" => int(0, i64::MAX),
        "max.compaction.lag.ms" => int(1, i64::MAX),
        "min.cleanable.dirty.ratio" => match value.trim().parse::<f64>() {
            Ok(v) if (0.0..=1.0).contains(&v) => Ok(v.to_string()),
            _ => Err(format!(
                "{key} must be a number in [0, 1], got {}",
                shown(value)
            )),
        },
        "index.interval.bytes" => int(0, i64::from(i32::MAX)),
        "min.insync.replicas" => int(1, i64::from(i16::MAX)),
        "unclean.leader.election.enable" => match value.trim() {
            "false" => Ok("false".to_string()),
            _ => Err(format!(
                "{key}: only false is supported (an out-of-sync replica never leads: no \
                 acknowledged write is given up)"
            )),
        },
        "max.message.bytes" => int(1, i64::from(i32::MAX)),
        "message.timestamp.type" => parse_timestamp_type(value)
            .map(|t| match t {
                TimestampType::CreateTime => "CreateTime".to_string(),
                TimestampType::LogAppendTime => "LogAppendTime".to_string(),
            })
            .ok_or_else(|| format!("{key}: expected CreateTime or LogAppendTime")),
        "message.timestamp.before.max.ms" | "message.timestamp.after.max.ms" => int(0, i64::MAX),
        "retention.bytes" | "retention.ms" => int(-1, i64::MAX),
        "segment.bytes" => int(14, i64::from(i32::MAX)),
        "segment.index.bytes" => int(24, i64::from(i32::MAX)),
        "segment.ms" => int(1, i64::MAX),
        _ => Err(format!("unknown topic configuration {}", shown(key))),
    }
}

/// A client's value quoted in an error message, cut short: a message must not echo
/// megabytes back.
fn shown(value: &str) -> String {
    const SHOWN: usize = 64;
    match value.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{:?}... ({} bytes)", &value[..cut], value.len()),
        None => format!("{value:?}"),
    }
}

/// `min.insync.replicas` of a topic: its override, else the broker's.
pub fn min_insync_replicas(broker: &BrokerConfig, overrides: &BTreeMap<String, String>) -> usize {
    overrides
        .get("min.insync.replicas")
        .or_else(|| broker.properties.get("min.insync.replicas"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(1)
        .max(1)
}

/// The log configuration of a topic with `overrides` on top of the broker defaults. The
/// overrides were validated when they were set.
pub fn log_config(broker: &BrokerConfig, overrides: &BTreeMap<String, String>) -> LogConfig {
    fn set<T: std::str::FromStr>(slot: &mut T, value: &str) {
        if let Ok(parsed) = value.parse() {
            *slot = parsed;
        }
    }
    let mut config = broker.log_defaults.clone();
    for (key, value) in overrides {
        let value = value.trim();
        match key.as_str() {
            "cleanup.policy" => {
                if let Ok(policy) = CleanupPolicy::parse(value) {
                    config.cleanup_policy = policy;
                }
            }
            "delete.retention.ms" => set(&mut config.delete_retention_ms, value),
            "max.compaction.lag.ms" => set(&mut config.max_compaction_lag_ms, value),
            "min.cleanable.dirty.ratio" => set(&mut config.min_cleanable_dirty_ratio, value),
            "min.compaction.lag.ms" => set(&mut config.min_compaction_lag_ms, value),
            "index.interval.bytes" => set(&mut config.index_interval_bytes, value),
            "max.message.bytes" => set(&mut config.max_message_bytes, value),
            "message.timestamp.before.max.ms" => set(&mut config.timestamp_before_max_ms, value),
            "message.timestamp.after.max.ms" => set(&mut config.timestamp_after_max_ms, value),
            "message.timestamp.type" => {
                config.timestamp_type =
                    parse_timestamp_type(value).unwrap_or(TimestampType::CreateTime);
            }
            "retention.bytes" => set(&mut config.retention_bytes, value),
            "retention.ms" => set(&mut config.retention_ms, value),
            "segment.bytes" => set(&mut config.segment_bytes, value),
            "segment.index.bytes" => set(&mut config.segment_index_bytes, value),
            "segment.ms" => set(&mut config.segment_ms, value),
            _ => {}
        }
    }
    config
}

/// Every topic property with its effective value and source.
pub fn describe(
    broker: &BrokerConfig,
    overrides: &BTreeMap<String, String>,
) -> Vec<(String, String, ConfigSource)> {
    TOPIC_PROPERTIES
        .iter()
        .map(|(key, broker_key)| {
            if let Some(value) = overrides.get(*key) {
                return (key.to_string(), value.clone(), ConfigSource::DynamicTopic);
            }
            if broker_key.is_empty() {
                return (
                    key.to_string(),
                    "producer".to_string(),
                    ConfigSource::Default,
                );
            }
            let source = if broker.overridden.contains_key(*broker_key) {
                ConfigSource::StaticBroker
            } else {
                ConfigSource::Default
            };
            (
                key.to_string(),
                broker.properties[*broker_key].clone(),
                source,
            )
        })
        .collect()
}

/// Kafka's topic-name rule: 1 to 249 characters from `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name cannot be {name:?}"));
    }
    if name.len() > 249 {
        return Err(format!(
            "topic name is {} characters long; the limit is 249",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name {name:?} contains {bad:?}; allowed: ASCII letters, digits, '.', '_', '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka() {
        assert!(validate_topic_name("orders.v2_eu-west").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("with space").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
        assert!(validate_topic_name(&"x".repeat(249)).is_ok());
    }

    #[test]
    fn overrides_apply_on_top_of_broker_defaults() {
        let broker = BrokerConfig::default();
        let overrides: BTreeMap<String, String> = [
            ("retention.ms".to_string(), "1000".to_string()),
            ("cleanup.policy".into(), "compact".into()),
        ]
        .into();
        for (key, value) in &overrides {
            validate(key, value).unwrap();
        }
        let config = log_config(&broker, &overrides);
        assert_eq!(config.retention_ms, 1000);
        assert!(config.cleanup_policy.compact);
        assert_eq!(config.segment_bytes, broker.log_defaults.segment_bytes);
        let described = describe(&broker, &overrides);
        let retention = described
            .iter()
            .find(|(k, _, _)| k == "retention.ms")
            .unwrap();
        assert_eq!(
            (retention.1.as_str(), retention.2),
            ("1000", ConfigSource::DynamicTopic)
        );
        let segment = described
            .iter()
            .find(|(k, _, _)| k == "segment.bytes")
            .unwrap();
        assert_eq!(segment.2, ConfigSource::Default);
        assert!(validate("retention.ms", "soon").is_err());
        // Stored canonical: a value that validates after trimming is stored trimmed.
        let padded = format!("1000{}", " ".repeat(70_000));
        assert_eq!(validate("retention.ms", &padded).unwrap(), "1000");
        assert_eq!(validate("retention.ms", " 007").unwrap(), "7");
        assert_eq!(
            validate("cleanup.policy", " delete , compact").unwrap(),
            "compact,delete"
        );
        let err = validate("retention.ms", &"9".repeat(100_000)).unwrap_err();
        assert!(err.len() < 200, "the error quotes the value short: {err}");
        assert!(validate("segment.bytes", "10").is_err());
        assert!(validate("compression.type", "zstd").is_err());
        assert!(validate("flux.capacitor", "1").is_err());
    }
}
