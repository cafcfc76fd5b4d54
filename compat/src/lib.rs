//! Compatibility suites: Sluice driven by clients nobody here wrote (librdkafka through the
//! Rust `rdkafka` crate, Python `confluent-kafka` and `kafka-python`, Debian's `kcat`, the
//! official Java client). The tests live in `tests/`; this library only starts brokers for
//! them. Must not be depended on by any other crate.

use std::collections::BTreeMap;
use std::path::Path;

use sluice_broker::{BrokerConfig, BrokerHandle};

/// Starts a broker on an ephemeral loopback port with its data in `dir`.
pub async fn start_broker(dir: &Path, extra: &[(&str, &str)]) -> BrokerHandle {
    let mut props: BTreeMap<String, String> = BTreeMap::new();
    props.insert("listeners".into(), "127.0.0.1:0".into());
    props.insert("log.dirs".into(), dir.display().to_string());
    for (k, v) in extra {
        props.insert(k.to_string(), v.to_string());
    }
    let config = BrokerConfig::from_overrides(props).expect("valid test config");
    sluice_broker::start(config).await.expect("broker starts")
}
