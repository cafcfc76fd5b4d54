//! Broker configuration: Kafka property names, from a TOML file, `SLUICE_*` environment
//! variables and command-line overrides (in increasing precedence).
//!
//! The TOML file may write a property flat (`"num.partitions" = 3`) or nested
//! (`num.partitions = 3`, which TOML reads as a table); both mean `num.partitions`. Unknown
//! properties are an error, so a typo never silently falls back to a default.
//! Environment: `log.retention.ms` is read from `SLUICE_LOG_RETENTION_MS`.
//!
//! Every component's settings are defined here, and this module depends on no other module
//! of the broker, so that any of them may read its settings without an import cycle.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sluice_log::{CleanupPolicy, Clock, FlushPolicy, LogConfig, ManagerConfig, SystemClock};
use sluice_record::TimestampType;

use crate::cluster_config::ClusterConfig;

/// A configuration problem, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("unknown configuration property {0:?}")]
    Unknown(String),
    #[error(
        "unknown environment variable {0}: no property of that name (SLUICE_<PROPERTY> sets a property, e.g. SLUICE_LOG_RETENTION_MS)"
    )]
    UnknownEnv(String),
    #[error("invalid value {value:?} for {key}: {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
}

/// Every property the broker understands, with its default. Kept in one table so that
/// DescribeConfigs, the environment mapping and validation agree.
pub const PROPERTIES: &[(&str, &str)] = &[
    ("node.id", "1"),
    ("process.roles", "broker,controller"),
    ("controller.quorum.voters", ""),
    ("listeners", "127.0.0.1:9092"),
    ("advertised.listeners", ""),
    ("controller.listener.names", "CONTROLLER"),
    ("inter.broker.listener.name", ""),
    (
        "listener.security.protocol.map",
        "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
    ),
    ("controller.quorum.election.timeout.ms", "1000"),
    ("broker.session.timeout.ms", "9000"),
    ("broker.heartbeat.interval.ms", "2000"),
    ("admin.http.listener", ""),
    ("log.dirs", "./data"),
    ("metadata.log.dir", ""),
    ("num.partitions", "1"),
    ("max.broker.partitions", "10000"),
    ("default.replication.factor", "1"),
    ("min.insync.replicas", "1"),
    ("replica.lag.time.max.ms", "30000"),
    ("replica.fetch.wait.max.ms", "500"),
    ("replica.sync.before.fetch", "true"),
    ("unclean.leader.election.enable", "false"),
    ("offsets.topic.replication.factor", "3"),
    ("auto.leader.rebalance.enable", "true"),
    ("leader.imbalance.check.interval.seconds", "300"),
    ("auto.create.topics.enable", "true"),
    ("message.max.bytes", "1048588"),
    ("socket.request.max.bytes", "104857600"),
    ("socket.max.inflight.bytes", "134217728"),
    ("max.connections", "4096"),
    ("max.connections.per.ip", "4096"),
    ("connections.max.idle.ms", "600000"),
    ("queued.max.requests", "500"),
    ("fetch.max.bytes", "57671680"),
    ("max.incremental.fetch.session.cache.slots", "1000"),
    ("fetch.zero.copy.enable", "true"),
    ("log.retention.ms", "604800000"),
    // Kafka's coarser forms; log.retention.ms wins over minutes, minutes over hours, when
    // set. Their defaults are what the ms default says.
    ("log.retention.minutes", "10080"),
    ("log.retention.hours", "168"),
    ("log.retention.bytes", "-1"),
    ("log.segment.bytes", "1073741824"),
    ("log.roll.ms", "604800000"),
    ("log.roll.hours", "168"),
    ("log.index.size.max.bytes", "10485760"),
    ("log.index.interval.bytes", "4096"),
    ("log.cleanup.policy", "delete"),
    ("log.cleaner.enable", "true"),
    ("log.cleaner.backoff.ms", "15000"),
    ("log.cleaner.dedupe.buffer.size", "134217728"),
    (
        "log.cleaner.io.max.bytes.per.second",
        "1.7976931348623157E308",
    ),
    ("log.cleaner.min.cleanable.ratio", "0.5"),
    ("log.cleaner.min.compaction.lag.ms", "0"),
    ("log.cleaner.max.compaction.lag.ms", "9223372036854775807"),
    ("log.cleaner.delete.retention.ms", "86400000"),
    ("log.message.timestamp.type", "CreateTime"),
    ("log.message.timestamp.before.max.ms", "9223372036854775807"),
    ("log.message.timestamp.after.max.ms", "3600000"),
    ("log.retention.check.interval.ms", "300000"),
    ("log.flush.policy", "group-commit"),
    ("log.flush.interval.ms", "1000"),
    ("log.flush.sync.threads", "64"),
    ("log.flush.offset.checkpoint.interval.ms", "60000"),
    ("group.min.session.timeout.ms", "6000"),
    ("group.max.session.timeout.ms", "1800000"),
    ("group.initial.rebalance.delay.ms", "3000"),
    ("offsets.topic.num.partitions", "50"),
    ("offsets.topic.segment.bytes", "104857600"),
    ("offsets.retention.minutes", "10080"),
    ("offsets.retention.check.interval.ms", "600000"),
    ("offset.metadata.max.bytes", "4096"),
    ("group.id.max.bytes", "1024"),
    ("group.max.count", "100000"),
    ("producer.id.expiration.ms", "86400000"),
];

/// Kafka properties that tune parts Sluice does not have (thread pools, socket buffers, the
/// replication of internal topics on a single node): accepted so that a Kafka
/// `server.properties` works as it is, and reported as ignored at startup.
pub const IGNORED_KAFKA_PROPERTIES: &[&str] = &[
    "num.network.threads",
    "num.io.threads",
    "num.recovery.threads.per.data.dir",
    "socket.send.buffer.bytes",
    "socket.receive.buffer.bytes",
    "transaction.state.log.replication.factor",
    "transaction.state.log.min.isr",
    "share.coordinator.state.topic.replication.factor",
    "share.coordinator.state.topic.min.isr",
    "controller.quorum.fetch.timeout.ms",
];

/// Settings that bound what group members may ask for (`group.*`).
#[derive(Debug, Clone)]
pub struct GroupLimits {
    pub min_session_timeout: Duration,
    pub max_session_timeout: Duration,
    pub initial_rebalance_delay: Duration,
}

/// Group coordinator settings (Kafka's `group.*` and `offsets.*` properties).
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub limits: GroupLimits,
    pub offsets_partitions: i32,
    pub offsets_segment_bytes: u32,
    pub offsets_retention: Duration,
    pub offsets_retention_check: Duration,
    pub metadata_max_bytes: usize,
    /// `group.id.max.bytes`: longer group ids are INVALID_GROUP_ID.
    pub group_id_max_bytes: usize,
    /// `group.max.count`: groups the coordinator keeps; a new one beyond is refused
    /// (COORDINATOR_NOT_AVAILABLE, which clients retry) until empty groups expire.
    pub max_groups: usize,
}

/// The broker's settings, parsed and validated.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    /// Roles, quorum voters, named listeners (`cluster_config`).
    pub cluster: ClusterConfig,
    /// Properties set that Sluice accepts from Kafka's files and ignores.
    pub ignored: Vec<String>,
    pub listen: SocketAddr,
    /// Where the admin HTTP endpoint listens (`admin.http.listener`); `None`: not served.
    pub http_listen: Option<SocketAddr>,
    /// Host and port given to clients in metadata; defaults to the listen address.
    pub advertised: (String, u16),
    pub data_dir: PathBuf,
    /// `metadata.log.dir`: where this voter keeps the metadata quorum's log (default
    /// `metadata/` in the data directory). On its own disk, a full data disk leaves the
    /// metadata writable, so the broker can hand its leaderships over instead of stopping.
    pub metadata_dir: PathBuf,
    pub num_partitions: i32,
    /// `max.broker.partitions` (KIP-578's name): partitions this broker may hold; a topic
    /// creation or partition increase beyond is refused before anything is written.
    pub max_partitions: i32,
    pub default_replication_factor: i16,
    /// `replica.lag.time.max.ms`: a follower that has not caught up with the leader's log
    /// end for this long leaves the ISR.
    pub replica_lag_time_max: Duration,
    /// `replica.fetch.wait.max.ms`: how long a follower's fetch waits at the leader for
    /// new records.
    pub replica_fetch_wait_max: Duration,
    /// `replica.sync.before.fetch`: a follower makes what it copied durable before its next
    /// fetch tells the leader it holds it (so acks=all means on disk on every in-sync
    /// replica). Off: it syncs in the background and the next fetch goes at once (Kafka's
    /// model: acknowledged writes are in the followers' page cache).
    pub replica_sync_before_fetch: bool,
    /// `offsets.topic.replication.factor`: `__consumer_offsets` gets this many replicas,
    /// or as many as there are live brokers when it is created, if fewer.
    pub offsets_replication_factor: i16,
    /// `auto.leader.rebalance.enable` and `leader.imbalance.check.interval.seconds`: the
    /// active controller moves partitions back to their preferred leader this often (none
    /// when off).
    pub leader_rebalance_interval: Option<Duration>,
    pub auto_create_topics: bool,
    pub max_request_bytes: u32,
    pub max_inflight_bytes: u64,
    /// `max.connections` and `max.connections.per.ip`: connections beyond are closed at once.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// `connections.max.idle.ms`: a connection with nothing in flight this long is closed.
    pub connections_max_idle: Duration,
    /// `queued.max.requests`: requests read but not answered, per connection.
    pub queued_max_requests: usize,
    /// `fetch.max.bytes`: the most record bytes one Fetch response carries (a request asking
    /// for more gets this).
    pub fetch_max_bytes: usize,
    /// `max.incremental.fetch.session.cache.slots`: fetch sessions (KIP-227) kept at once;
    /// 0 turns sessions off (every fetch is then a full one).
    pub fetch_session_slots: usize,
    pub zero_copy_fetch: bool,
    /// Defaults for every topic (the `log.*` properties and `message.max.bytes`).
    pub log_defaults: LogConfig,
    pub flush_policy: FlushPolicy,
    pub flush_interval: Duration,
    pub sync_threads: usize,
    pub retention_check_interval: Duration,
    pub checkpoint_interval: Duration,
    /// `log.cleaner.enable`, `log.cleaner.backoff.ms`, `log.cleaner.dedupe.buffer.size`.
    pub cleaner_enabled: bool,
    pub cleaner_backoff: Duration,
    pub cleaner_dedupe_buffer_bytes: usize,
    /// `log.cleaner.io.max.bytes.per.second`.
    pub cleaner_io_max_bytes_per_second: f64,
    /// Group coordinator settings (`group.*`, `offsets.*`).
    pub coordinator: CoordinatorConfig,
    /// The effective value of every property, for DescribeConfigs.
    pub properties: BTreeMap<String, String>,
    /// Properties set explicitly (file, environment or flag) rather than by default.
    pub overridden: BTreeMap<String, String>,
    /// Where the broker reads time: the system clock, or a test's.
    pub clock: Arc<dyn Clock>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig::from_overrides(BTreeMap::new()).expect("defaults are valid")
    }
}

/// Reads a TOML file into flat `key = value` properties.
pub fn read_toml_file(path: &std::path::Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let fail = |reason: String| ConfigError::File {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| fail(e.to_string()))?;
    let mut out = BTreeMap::new();
    flatten("", &table, &mut out).map_err(fail)?;
    Ok(out)
}

fn flatten(
    prefix: &str,
    table: &toml::Table,
    out: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    for (key, value) in table {
        let key = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let text = match value {
            toml::Value::Table(inner) => {
                flatten(&key, inner, out)?;
                continue;
            }
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(s) => Ok(s.clone()),
                    toml::Value::Integer(i) => Ok(i.to_string()),
                    other => Err(format!("{key}: unsupported list item {other:?}")),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            toml::Value::Datetime(_) => return Err(format!("{key}: dates are not a valid value")),
        };
        out.insert(key, text);
    }
    Ok(())
}

/// The environment variable that sets `key`.
pub fn env_name(key: &str) -> String {
    format!("SLUICE_{}", key.to_ascii_uppercase().replace('.', "_"))
}

/// `SLUICE_` variables that are not properties: the CLI's, the pipeline's and the tests'.
const NON_PROPERTY_ENV: &[&str] = &[
    "SLUICE_LOG",
    "SLUICE_BOOTSTRAP",
    "SLUICE_DATABASE_URL",
    "SLUICE_JAVA_JARS",
    "SLUICE_PG_BINDIR",
    "SLUICE_PYTHON",
];
const NON_PROPERTY_ENV_PREFIXES: &[&str] =
    &["SLUICE_TEST_", "SLUICE_CRASH_", "SLUICE_CLEANER_CRASH_"];

/// Properties set in the environment. A `SLUICE_` variable that names no property (and is
/// not one of the tools' own) is refused, as an unknown `--set` key is: a misspelt
/// `SLUICE_LOG_RETENTON_MS` must not be ignored silently.
pub fn read_env() -> Result<BTreeMap<String, String>, ConfigError> {
    read_env_from(std::env::vars())
}

fn read_env_from(
    vars: impl Iterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut found = BTreeMap::new();
    for (name, value) in vars {
        if !name.starts_with("SLUICE_")
            || NON_PROPERTY_ENV.contains(&name.as_str())
            || NON_PROPERTY_ENV_PREFIXES
                .iter()
                .any(|p| name.starts_with(p))
        {
            continue;
        }
        match PROPERTIES.iter().find(|(key, _)| env_name(key) == name) {
            Some((key, _)) => {
                found.insert(key.to_string(), value);
            }
            None => return Err(ConfigError::UnknownEnv(name)),
        }
    }
    Ok(found)
}

/// Reads a Java `.properties` file (Kafka's `server.properties`): `key=value`, `key: value`
/// or `key value` per line, `#` and `!` comments, a trailing backslash continues a line.
pub fn read_properties_file(
    path: &std::path::Path,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(parse_properties(&text))
}

fn parse_properties(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut logical = String::new();
    for line in text.lines() {
        let line = line.trim_start();
        if logical.is_empty() && (line.starts_with('#') || line.starts_with('!')) {
            continue;
        }
        // An odd number of trailing backslashes continues the line.
        let trailing = line.len() - line.trim_end_matches('\\').len();
        if trailing % 2 == 1 {
            logical.push_str(&line[..line.len() - 1]);
            continue;
        }
        logical.push_str(line);
        let entry = std::mem::take(&mut logical);
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let split = entry.find(['=', ':', ' ', '\t']).unwrap_or(entry.len());
        let key = entry[..split].trim();
        let rest = entry[split..].trim_start();
        let value = rest.strip_prefix(['=', ':']).unwrap_or(rest).trim_start();
        out.insert(key.to_string(), value.to_string());
    }
    out
}

/// Reads a configuration file: Java properties if it is named `*.properties` or is not
/// TOML but reads as properties (`key=value` lines), TOML otherwise.
pub fn read_config_file(path: &std::path::Path) -> Result<BTreeMap<String, String>, ConfigError> {
    if path.extension().is_some_and(|e| e == "properties") {
        return read_properties_file(path);
    }
    match read_toml_file(path) {
        Ok(props) => Ok(props),
        Err(toml_error) => {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
            let looks_like_properties = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
                .all(|l| l.contains('=') && !l.starts_with('['));
            if looks_like_properties {
                Ok(parse_properties(&text))
            } else {
                Err(toml_error)
            }
        }
    }
}

struct Props<'a> {
    values: &'a BTreeMap<String, String>,
}

impl Props<'_> {
    fn raw(&self, key: &str) -> &str {
        self.values
            .get(key)
            .map(String::as_str)
            .expect("every property has a default")
    }

    fn invalid(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.into(),
            value: self.raw(key).into(),
            reason: reason.into(),
        }
    }

    fn parse<T: std::str::FromStr>(&self, key: &str) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        self.raw(key)
            .trim()
            .parse()
            .map_err(|e: T::Err| self.invalid(key, e.to_string()))
    }

    fn millis(&self, key: &str) -> Result<Duration, ConfigError> {
        let ms: u64 = self.parse(key)?;
        if ms == 0 {
            return Err(self.invalid(key, "must be positive"));
        }
        Ok(Duration::from_millis(ms))
    }
}

impl BrokerConfig {
    /// Builds a configuration from explicitly set properties (defaults fill the rest).
    pub fn from_overrides(overridden: BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut overridden = overridden;
        let mut ignored = Vec::new();
        overridden.retain(|key, _| {
            let skip = IGNORED_KAFKA_PROPERTIES.contains(&key.as_str());
            if skip {
                ignored.push(key.clone());
            }
            !skip
        });
        for key in overridden.keys() {
            if key == "controller.quorum.bootstrap.servers" {
                return Err(ConfigError::Invalid {
                    key: key.clone(),
                    value: overridden[key].clone(),
                    reason: "dynamic quorums (KIP-853) are not supported: list the voters in controller.quorum.voters (ID@HOST:PORT,...)".into(),
                });
            }
            if !PROPERTIES.iter().any(|(known, _)| known == key) {
                return Err(ConfigError::Unknown(key.clone()));
            }
        }
        let mut values: BTreeMap<String, String> = PROPERTIES
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        values.extend(overridden.clone());
        let p = Props { values: &values };

        let node_id: i32 = p.parse("node.id")?;
        let cluster = ClusterConfig::parse(|key| p.raw(key), node_id).map_err(|refusal| {
            ConfigError::Invalid {
                key: refusal.key.to_string(),
                value: p.raw(refusal.key).to_string(),
                reason: refusal.reason,
            }
        })?;
        if !cluster.roles.controller && !cluster.has_peers() {
            return Err(p.invalid(
                "controller.quorum.voters",
                "a broker-only node follows a quorum of combined nodes that listen for it: name at least two voters (a single node's quorum has no controller listener)",
            ));
        }
        if !cluster.roles.broker && !cluster.has_peers() {
            return Err(p.invalid(
                "controller.quorum.voters",
                "a controller-only node serves brokers of a quorum of several: name at least two voters",
            ));
        }
        // A controller-only node serves no client: its own listener stands in for the
        // client address (it is the quorum's, bound by the quorum, never by the server).
        let broker_listener = cluster
            .broker_listener()
            .or_else(|| {
                cluster
                    .controller_listener()
                    .filter(|_| !cluster.roles.broker)
            })
            .expect("a broker has a broker listener, a controller one (checked by ClusterConfig)");
        let listen = broker_listener.bind_addr().ok_or_else(|| {
            p.invalid(
                "listeners",
                format!(
                    "cannot resolve {}:{} (an empty host is every interface)",
                    broker_listener.host, broker_listener.port
                ),
            )
        })?;
        if p.raw("log.dirs").contains(',') {
            return Err(p.invalid(
                "log.dirs",
                "several data directories are not supported yet: give one",
            ));
        }
        // Kafka's precedence: ms over minutes over hours, whichever is set.
        let set = |key: &str| overridden.contains_key(key);
        let retention_ms: i64 = if set("log.retention.ms")
            || !(set("log.retention.minutes") || set("log.retention.hours"))
        {
            p.parse("log.retention.ms")?
        } else if set("log.retention.minutes") {
            p.parse::<i64>("log.retention.minutes")?
                .checked_mul(60_000)
                .ok_or_else(|| p.invalid("log.retention.minutes", "too large"))?
        } else {
            p.parse::<i64>("log.retention.hours")?
                .checked_mul(3_600_000)
                .ok_or_else(|| p.invalid("log.retention.hours", "too large"))?
        };
        let roll_ms: i64 = if set("log.roll.ms") || !set("log.roll.hours") {
            p.parse("log.roll.ms")?
        } else {
            p.parse::<i64>("log.roll.hours")?
                .checked_mul(3_600_000)
                .ok_or_else(|| p.invalid("log.roll.hours", "too large"))?
        };
        let advertised = match cluster.advertised.get(&broker_listener.name) {
            Some(advertised) => advertised.clone(),
            // Listening on every interface: tell clients this machine's name, as Kafka does.
            None if listen.ip().is_unspecified() => (host_name(), listen.port()),
            None => (listen.ip().to_string(), listen.port()),
        };
        let http_listen = match p.raw("admin.http.listener").trim() {
            "" => None,
            text => Some(resolve_listener(text).ok_or_else(|| {
                p.invalid(
                    "admin.http.listener",
                    "expected HOST:PORT, e.g. 127.0.0.1:8080",
                )
            })?),
        };
        let cleanup_policy = CleanupPolicy::parse(p.raw("log.cleanup.policy"))
            .map_err(|e| p.invalid("log.cleanup.policy", e.to_string()))?;
        let timestamp_type =
            parse_timestamp_type(p.raw("log.message.timestamp.type")).ok_or_else(|| {
                p.invalid(
                    "log.message.timestamp.type",
                    "expected CreateTime or LogAppendTime",
                )
            })?;
        let log_defaults = LogConfig {
            segment_bytes: p.parse("log.segment.bytes")?,
            segment_ms: roll_ms,
            segment_index_bytes: p.parse("log.index.size.max.bytes")?,
            index_interval_bytes: p.parse("log.index.interval.bytes")?,
            retention_ms,
            retention_bytes: p.parse("log.retention.bytes")?,
            max_message_bytes: p.parse("message.max.bytes")?,
            cleanup_policy,
            timestamp_type,
            producer_expiration_ms: p.parse("producer.id.expiration.ms")?,
            min_cleanable_dirty_ratio: p.parse("log.cleaner.min.cleanable.ratio")?,
            min_compaction_lag_ms: p.parse("log.cleaner.min.compaction.lag.ms")?,
            max_compaction_lag_ms: p.parse("log.cleaner.max.compaction.lag.ms")?,
            delete_retention_ms: p.parse("log.cleaner.delete.retention.ms")?,
            timestamp_before_max_ms: p.parse("log.message.timestamp.before.max.ms")?,
            timestamp_after_max_ms: p.parse("log.message.timestamp.after.max.ms")?,
        };
        log_defaults.validate().map_err(|e| ConfigError::Invalid {
            key: "log.*".into(),
            value: String::new(),
            reason: e.to_string(),
        })?;
        let flush_policy = match p.raw("log.flush.policy").trim() {
            "group-commit" => FlushPolicy::GroupCommit,
            "interval" => FlushPolicy::Interval,
            _ => return Err(p.invalid("log.flush.policy", "expected group-commit or interval")),
        };
        let num_partitions: i32 = p.parse("num.partitions")?;
        if num_partitions < 1 {
            return Err(p.invalid("num.partitions", "must be at least 1"));
        }
        let max_request_bytes: u32 = p.parse("socket.request.max.bytes")?;
        let max_inflight_bytes: u64 = p.parse("socket.max.inflight.bytes")?;
        if max_inflight_bytes < u64::from(max_request_bytes) {
            return Err(p.invalid(
                "socket.max.inflight.bytes",
                "must be at least socket.request.max.bytes",
            ));
        }
        let at_least_one = |key: &str| -> Result<usize, ConfigError> {
            let value: usize = p.parse(key)?;
            if value == 0 {
                return Err(p.invalid(key, "must be at least 1"));
            }
            Ok(value)
        };
        let max_connections = at_least_one("max.connections")?;
        let max_connections_per_ip = at_least_one("max.connections.per.ip")?;
        let queued_max_requests = at_least_one("queued.max.requests")?;
        let fetch_max_bytes = at_least_one("fetch.max.bytes")?;
        at_least_one("min.insync.replicas")?;
        at_least_one("offsets.topic.replication.factor")?;
        if p.raw("unclean.leader.election.enable").trim() != "false" {
            return Err(p.invalid(
                "unclean.leader.election.enable",
                "only false is supported: an out-of-sync replica never leads (no acknowledged write is given up)",
            ));
        }
        let sync_threads: usize = p.parse("log.flush.sync.threads")?;
        if sync_threads == 0 {
            return Err(p.invalid("log.flush.sync.threads", "must be at least 1"));
        }
        let cleaner_io_max_bytes_per_second: f64 =
            p.parse("log.cleaner.io.max.bytes.per.second")?;
        if cleaner_io_max_bytes_per_second.is_nan() || cleaner_io_max_bytes_per_second <= 0.0 {
            return Err(p.invalid("log.cleaner.io.max.bytes.per.second", "must be positive"));
        }
        let offsets_partitions: i32 = p.parse("offsets.topic.num.partitions")?;
        if offsets_partitions < 1 {
            return Err(p.invalid("offsets.topic.num.partitions", "must be at least 1"));
        }
        let retention_minutes: u64 = p.parse("offsets.retention.minutes")?;
        let coordinator = CoordinatorConfig {
            limits: GroupLimits {
                min_session_timeout: Duration::from_millis(
                    p.parse("group.min.session.timeout.ms")?,
                ),
                max_session_timeout: Duration::from_millis(
                    p.parse("group.max.session.timeout.ms")?,
                ),
                initial_rebalance_delay: Duration::from_millis(
                    p.parse("group.initial.rebalance.delay.ms")?,
                ),
            },
            offsets_partitions,
            offsets_segment_bytes: p.parse("offsets.topic.segment.bytes")?,
            offsets_retention: Duration::from_secs(retention_minutes * 60),
            offsets_retention_check: p.millis("offsets.retention.check.interval.ms")?,
            metadata_max_bytes: p.parse("offset.metadata.max.bytes")?,
            group_id_max_bytes: at_least_one("group.id.max.bytes")?,
            max_groups: at_least_one("group.max.count")?,
        };
        Ok(BrokerConfig {
            coordinator,
            node_id,
            cluster,
            ignored,
            listen,
            http_listen,
            advertised,
            data_dir: PathBuf::from(p.raw("log.dirs")),
            metadata_dir: match p.raw("metadata.log.dir") {
                "" => PathBuf::from(p.raw("log.dirs")).join("metadata"),
                dir => PathBuf::from(dir),
            },
            num_partitions,
            max_partitions: at_least_one("max.broker.partitions")?.min(i32::MAX as usize) as i32,
            default_replication_factor: p.parse("default.replication.factor")?,
            replica_lag_time_max: p.millis("replica.lag.time.max.ms")?,
            replica_fetch_wait_max: p.millis("replica.fetch.wait.max.ms")?,
            replica_sync_before_fetch: p.parse("replica.sync.before.fetch")?,
            offsets_replication_factor: p.parse("offsets.topic.replication.factor")?,
            leader_rebalance_interval: p
                .parse::<bool>("auto.leader.rebalance.enable")?
                .then(|| p.parse::<u64>("leader.imbalance.check.interval.seconds"))
                .transpose()?
                .map(|s| Duration::from_secs(s.max(1))),
            auto_create_topics: p.parse("auto.create.topics.enable")?,
            max_request_bytes,
            max_inflight_bytes,
            max_connections,
            max_connections_per_ip,
            connections_max_idle: p.millis("connections.max.idle.ms")?,
            queued_max_requests,
            fetch_max_bytes,
            fetch_session_slots: p.parse("max.incremental.fetch.session.cache.slots")?,
            zero_copy_fetch: p.parse("fetch.zero.copy.enable")?,
            log_defaults,
            flush_policy,
            flush_interval: p.millis("log.flush.interval.ms")?,
            sync_threads,
            retention_check_interval: p.millis("log.retention.check.interval.ms")?,
            checkpoint_interval: p.millis("log.flush.offset.checkpoint.interval.ms")?,
            cleaner_enabled: p.parse("log.cleaner.enable")?,
            cleaner_backoff: p.millis("log.cleaner.backoff.ms")?,
            cleaner_dedupe_buffer_bytes: p.parse("log.cleaner.dedupe.buffer.size")?,
            cleaner_io_max_bytes_per_second,
            properties: values.clone(),
            overridden,
            clock: Arc::new(SystemClock),
        })
    }

    /// The log manager's settings.
    pub fn manager_config(&self) -> ManagerConfig {
        let mut config = ManagerConfig::new(&self.data_dir);
        config.default_log_config = self.log_defaults.clone();
        config.flush_policy = self.flush_policy;
        config.flush_interval = self.flush_interval;
        config.sync_threads = self.sync_threads;
        config.retention_check_interval = self.retention_check_interval;
        config.checkpoint_interval = self.checkpoint_interval;
        config.cleaner_enabled = self.cleaner_enabled;
        config.cleaner_backoff = self.cleaner_backoff;
        config.cleaner_dedupe_buffer_bytes = self.cleaner_dedupe_buffer_bytes;
        config.cleaner_io_max_bytes_per_second = self.cleaner_io_max_bytes_per_second;
        config
    }
}

pub(crate) fn parse_timestamp_type(text: &str) -> Option<TimestampType> {
    match text.trim() {
        "CreateTime" => Some(TimestampType::CreateTime),
        "LogAppendTime" => Some(TimestampType::LogAppendTime),
        _ => None,
    }
}

/// The socket address of `host:port` or `PLAINTEXT://host:port`, resolving a host name.
/// This machine's name, for clients to connect to when the broker listens on every
/// interface and no advertised listener is set.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The address to listen on: an empty host (`PLAINTEXT://:9092`) is every interface.
fn resolve_listener(text: &str) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    let text = text.trim();
    let text = text.split_once("://").map_or(text, |(_, rest)| rest);
    let (host, port) = text.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    (host, port.parse::<u16>().ok()?)
        .to_socket_addrs()
        .ok()?
        .next()
}

/// `host:port` or `PLAINTEXT://host:port`.
pub fn parse_host_port(text: &str) -> Option<(String, u16)> {
    let text = text.trim();
    let text = text.split_once("://").map_or(text, |(_, rest)| rest);
    let (host, port) = text.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_kafka() {
        let config = BrokerConfig::default();
        assert_eq!(config.listen.to_string(), "127.0.0.1:9092");
        assert_eq!(config.advertised, ("127.0.0.1".to_string(), 9092));
        assert_eq!(config.log_defaults.max_message_bytes, 1_048_588);
        assert_eq!(config.log_defaults.retention_ms, 7 * 24 * 3600 * 1000);
        assert!(config.auto_create_topics);
    }

    #[test]
    fn flat_and_nested_toml_agree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(
            &path,
            "\"num.partitions\" = 3\nlog.retention.ms = 1000\nlisteners = \"0.0.0.0:19092\"\nlog.cleanup.policy = [\"compact\", \"delete\"]\n",
        )
        .unwrap();
        let props = read_toml_file(&path).unwrap();
        assert_eq!(props["num.partitions"], "3");
        assert_eq!(props["log.retention.ms"], "1000");
        assert_eq!(props["log.cleanup.policy"], "compact,delete");
        let config = BrokerConfig::from_overrides(props).unwrap();
        assert_eq!(config.num_partitions, 3);
        assert_eq!(config.log_defaults.retention_ms, 1000);
        assert!(config.log_defaults.cleanup_policy.compact);
    }

    #[test]
    fn mistakes_are_named() {
        let err = BrokerConfig::from_overrides(overrides(&[("num.partitons", "3")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown configuration property \"num.partitons\""
        );
        let err =
            BrokerConfig::from_overrides(overrides(&[("num.partitions", "many")])).unwrap_err();
        assert!(err.to_string().contains("num.partitions"), "{err}");
        let err =
            BrokerConfig::from_overrides(overrides(&[("listeners", "localhost")])).unwrap_err();
        assert!(err.to_string().contains("HOST:PORT"), "{err}");
        assert!(BrokerConfig::from_overrides(overrides(&[("log.flush.policy", "never")])).is_err());
    }

    #[test]
    fn env_names_and_host_ports() {
        assert_eq!(env_name("log.retention.ms"), "SLUICE_LOG_RETENTION_MS");
        assert_eq!(
            parse_host_port("PLAINTEXT://broker-1:9092"),
            Some(("broker-1".into(), 9092))
        );
        assert_eq!(parse_host_port("[::1]:19092"), Some(("::1".into(), 19092)));
        assert_eq!(parse_host_port("nohost"), None);
    }

    #[test]
    fn kafka_server_properties_are_read() {
        let props = parse_properties(
            "# Kafka's server.properties\n\
             ! another comment\n\
             node.id=1\n\
             listeners = PLAINTEXT://:9092,CONTROLLER://:9093\n\
             log.dirs: /tmp/kraft-combined-logs\n\
             num.partitions 3\n\
             log.retention.hours=\\\n   24\n\
             \n",
        );
        assert_eq!(props["node.id"], "1");
        assert_eq!(props["listeners"], "PLAINTEXT://:9092,CONTROLLER://:9093");
        assert_eq!(props["log.dirs"], "/tmp/kraft-combined-logs");
        assert_eq!(props["num.partitions"], "3");
        assert_eq!(props["log.retention.hours"], "24", "a continued line");
        let config = BrokerConfig::from_overrides(props).unwrap();
        assert_eq!(
            config.listen.to_string(),
            "0.0.0.0:9092",
            "an empty host is every interface"
        );
        assert_ne!(
            config.advertised.0, "0.0.0.0",
            "clients are told a name they can reach"
        );
        assert_eq!(config.log_defaults.retention_ms, 24 * 3_600_000);
    }

    #[test]
    fn kafkas_own_server_properties_start_a_single_node() {
        // The KRaft combined-mode file Kafka ships, as a user would pass it.
        let props = parse_properties(
            "process.roles=broker,controller\n\
             node.id=1\n\
             controller.quorum.voters=1@localhost:9093\n\
             listeners=PLAINTEXT://:9092,CONTROLLER://:9093\n\
             inter.broker.listener.name=PLAINTEXT\n\
             advertised.listeners=PLAINTEXT://localhost:9092\n\
             controller.listener.names=CONTROLLER\n\
             listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL\n\
             num.network.threads=3\n\
             num.io.threads=8\n\
             socket.send.buffer.bytes=102400\n\
             socket.receive.buffer.bytes=102400\n\
             socket.request.max.bytes=104857600\n\
             log.dirs=/tmp/kraft-combined-logs\n\
             num.partitions=1\n\
             num.recovery.threads.per.data.dir=1\n\
             offsets.topic.replication.factor=1\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             log.retention.hours=168\n\
             log.segment.bytes=1073741824\n\
             log.retention.check.interval.ms=300000\n",
        );
        let config = BrokerConfig::from_overrides(props).unwrap();
        assert_eq!(config.listen.port(), 9092);
        assert_eq!(config.advertised, ("localhost".to_string(), 9092));
        assert_eq!(config.cluster.voters.len(), 1);
        assert_eq!(
            config.cluster.controller_listener().map(|l| l.port),
            Some(9093)
        );
        assert!(config.ignored.contains(&"num.network.threads".to_string()));
        assert_eq!(config.ignored.len(), 7, "{:?}", config.ignored);
        assert_eq!(config.offsets_replication_factor, 1);
        let three = BrokerConfig::from_overrides(overrides(&[
            ("controller.quorum.voters", "1@a:9093,2@b:9093,3@c:9093"),
            ("listeners", "PLAINTEXT://:9092,CONTROLLER://:9093"),
        ]))
        .unwrap();
        assert!(three.cluster.has_peers());
        let broker_only = BrokerConfig::from_overrides(overrides(&[
            ("process.roles", "broker"),
            ("controller.quorum.voters", "2@b:9093,3@c:9093"),
            ("listeners", "PLAINTEXT://:9092"),
        ]))
        .unwrap();
        assert!(!broker_only.cluster.roles.controller);
        let controller_only = BrokerConfig::from_overrides(overrides(&[
            ("process.roles", "controller"),
            ("controller.quorum.voters", "1@a:9093,2@b:9093,3@c:9093"),
            ("listeners", "CONTROLLER://:9093"),
        ]))
        .unwrap();
        assert!(!controller_only.cluster.roles.broker);
        assert_eq!(controller_only.listen.port(), 9093);
    }

    #[test]
    fn retention_and_roll_take_kafkas_coarser_forms_with_its_precedence() {
        let retention = |pairs: &[(&str, &str)]| {
            BrokerConfig::from_overrides(overrides(pairs))
                .unwrap()
                .log_defaults
                .retention_ms
        };
        assert_eq!(retention(&[]), 7 * 24 * 3_600_000);
        assert_eq!(retention(&[("log.retention.hours", "1")]), 3_600_000);
        assert_eq!(
            retention(&[("log.retention.minutes", "2"), ("log.retention.hours", "1")]),
            120_000
        );
        assert_eq!(
            retention(&[("log.retention.ms", "5"), ("log.retention.minutes", "2")]),
            5
        );
        let roll = BrokerConfig::from_overrides(overrides(&[("log.roll.hours", "2")])).unwrap();
        assert_eq!(roll.log_defaults.segment_ms, 7_200_000);
    }

    #[test]
    fn unsupported_listeners_and_several_data_directories_are_refused() {
        for (key, value, says) in [
            ("listeners", "SSL://:9093", "not supported yet"),
            (
                "listeners",
                "PLAINTEXT://:9092,PLAINTEXT://:9093",
                "appears twice",
            ),
            (
                "listeners",
                "PLAINTEXT://:9092,INTERNAL://:9093",
                "no security protocol",
            ),
            (
                "controller.quorum.bootstrap.servers",
                "a:9093",
                "controller.quorum.voters",
            ),
            ("log.dirs", "/a,/b", "several data directories"),
        ] {
            let err = BrokerConfig::from_overrides(overrides(&[(key, value)])).unwrap_err();
            assert!(err.to_string().contains(says), "{key}={value}: {err}");
        }
    }

    #[test]
    fn unknown_sluice_variables_are_refused_the_tools_own_are_not() {
        let vars = |pairs: &[(&str, &str)]| {
            read_env_from(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        };
        let found = vars(&[
            ("SLUICE_LOG_RETENTION_MS", "5"),
            ("SLUICE_LOG", "debug"),
            ("SLUICE_BOOTSTRAP", "x:1"),
            ("SLUICE_TEST_SEED", "7"),
            ("PATH", "/bin"),
        ])
        .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found["log.retention.ms"], "5");
        let err = vars(&[("SLUICE_LOG_RETENTON_MS", "5")]).unwrap_err();
        assert!(err.to_string().contains("SLUICE_LOG_RETENTON_MS"), "{err}");
    }
}
