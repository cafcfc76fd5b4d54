//! The cluster's side of the configuration, under Kafka's KRaft names: `process.roles`,
//! `controller.quorum.voters`, named `listeners` with `listener.security.protocol.map`,
//! `controller.listener.names`, `inter.broker.listener.name`, `advertised.listeners`, and
//! the quorum's and brokers' timeouts. Parsing and Kafka's validation rules only; what runs
//! is decided at startup.
//!
//! A plain single node needs none of it: the defaults are a combined node (`broker,
//! controller`) with no other voter, and a listener written `HOST:PORT` is the PLAINTEXT one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Which parts of Sluice a process runs (`process.roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub broker: bool,
    pub controller: bool,
}

/// One voter of the metadata quorum (`id@host:port` in `controller.quorum.voters`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub id: i32,
    pub host: String,
    pub port: u16,
}

/// A named listener (`NAME://host:port`); `HOST:PORT` alone is named PLAINTEXT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    /// As written; empty means every interface.
    pub host: String,
    pub port: u16,
}

impl Listener {
    /// The address to bind: an empty host is every interface.
    pub fn bind_addr(&self) -> Option<SocketAddr> {
        let host = if self.host.is_empty() {
            "0.0.0.0"
        } else {
            &self.host
        };
        (host, self.port).to_socket_addrs().ok()?.next()
    }
}

/// The cluster settings, validated.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub roles: Roles,
    /// Sorted by id; empty when the node is a quorum of itself.
    pub voters: Vec<Voter>,
    /// Every listener, in the order written.
    pub listeners: Vec<Listener>,
    /// The listener names the quorum speaks on (`controller.listener.names`).
    pub controller_listener_names: Vec<String>,
    /// The listener brokers use to reach each other (`inter.broker.listener.name`).
    pub inter_broker_listener_name: String,
    /// What clients are told, by listener name (`advertised.listeners`); listeners not named
    /// there advertise their own address.
    pub advertised: BTreeMap<String, (String, u16)>,
    pub election_timeout: Duration,
    pub broker_session_timeout: Duration,
    pub broker_heartbeat_interval: Duration,
}

/// A property and why its value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub key: &'static str,
    pub reason: String,
}

fn refuse(key: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal {
        key,
        reason: reason.into(),
    }
}

/// The security protocols Sluice speaks today.
const SUPPORTED_PROTOCOLS: [&str; 1] = ["PLAINTEXT"];
const KNOWN_PROTOCOLS: [&str; 4] = ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"];

impl ClusterConfig {
    /// Parses and validates the cluster properties; `get` returns a property's value (its
    /// default when unset).
    pub fn parse<'a>(get: impl Fn(&str) -> &'a str, node_id: i32) -> Result<Self, Refusal> {
        let roles = parse_roles(get("process.roles"))?;
        let voters = parse_voters(get("controller.quorum.voters"))?;
        let protocol_map = parse_protocol_map(get("listener.security.protocol.map"))?;
        let listeners = parse_listeners(get("listeners"), "listeners")?;
        let controller_listener_names: Vec<String> = names(get("controller.listener.names"));
        let millis = |key: &'static str| -> Result<Duration, Refusal> {
            get(key)
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|&ms| ms > 0)
                .map(Duration::from_millis)
                .ok_or_else(|| refuse(key, "expected a positive number of milliseconds"))
        };
        let election_timeout = millis("controller.quorum.election.timeout.ms")?;
        let broker_session_timeout = millis("broker.session.timeout.ms")?;
        let broker_heartbeat_interval = millis("broker.heartbeat.interval.ms")?;
        if broker_heartbeat_interval >= broker_session_timeout {
            return Err(refuse(
                "broker.heartbeat.interval.ms",
                "must be shorter than broker.session.timeout.ms",
            ));
        }

        if node_id < 0 {
            return Err(refuse("node.id", "must be 0 or more"));
        }
        let is_voter = voters.iter().any(|v| v.id == node_id);
        if !voters.is_empty() && roles.controller && !is_voter {
            return Err(refuse(
                "controller.quorum.voters",
                format!("this node (node.id {node_id}) has the controller role but is not a voter"),
            ));
        }
        if roles.controller && !roles.broker && voters.is_empty() {
            return Err(refuse(
                "controller.quorum.voters",
                "a controller-only node needs the voters it forms a quorum with",
            ));
        }
        if !roles.controller && is_voter {
            return Err(refuse(
                "controller.quorum.voters",
                format!("node.id {node_id} is a voter but process.roles has no controller"),
            ));
        }
        if !roles.controller && voters.is_empty() {
            return Err(refuse(
                "controller.quorum.voters",
                "a broker-only node needs the controllers' addresses",
            ));
        }

        let mut seen_names = BTreeSet::new();
        let mut seen_ports = BTreeSet::new();
        for listener in &listeners {
            if !seen_names.insert(listener.name.as_str()) {
                return Err(refuse(
                    "listeners",
                    format!("listener name {} appears twice", listener.name),
                ));
            }
            if listener.port != 0 && !seen_ports.insert(listener.port) {
                return Err(refuse(
                    "listeners",
                    format!("port {} is used by two listeners", listener.port),
                ));
            }
            let protocol = protocol_of(&protocol_map, &controller_listener_names, &listener.name)
                .ok_or_else(|| {
                refuse(
                    "listener.security.protocol.map",
                    format!(
                        "listener {} has no security protocol (add {}:PLAINTEXT)",
                        listener.name, listener.name
                    ),
                )
            })?;
            if !SUPPORTED_PROTOCOLS.contains(&protocol) {
                return Err(refuse(
                    "listeners",
                    format!(
                        "listener {}: {protocol} is not supported yet (only PLAINTEXT)",
                        listener.name
                    ),
                ));
            }
        }
        let is_controller_listener = |l: &Listener| controller_listener_names.contains(&l.name);
        let broker_listeners: Vec<&Listener> = listeners
            .iter()
            .filter(|l| !is_controller_listener(l))
            .collect();
        if roles.broker && broker_listeners.is_empty() {
            return Err(refuse(
                "listeners",
                "no listener for clients (PLAINTEXT://host:port)",
            ));
        }
        if !roles.broker && !broker_listeners.is_empty() {
            return Err(refuse(
                "listeners",
                format!(
                    "a controller-only node serves only its controller listeners ({}), not {}",
                    controller_listener_names.join(","),
                    broker_listeners[0].name
                ),
            ));
        }
        if roles.broker && broker_listeners.len() > 1 {
            return Err(refuse(
                "listeners",
                "only one broker listener is supported yet (plus the controller's)",
            ));
        }
        let has_controller_listener = listeners.iter().any(is_controller_listener);
        if !roles.controller && has_controller_listener {
            return Err(refuse(
                "listeners",
                "a broker-only node must not listen on a controller listener",
            ));
        }
        if roles.controller && voters.len() > 1 && !has_controller_listener {
            return Err(refuse(
                "listeners",
                format!(
                    "a voter of a quorum needs a listener named in controller.listener.names ({})",
                    controller_listener_names.join(",")
                ),
            ));
        }

        let inter_broker_listener_name = match get("inter.broker.listener.name").trim() {
            "" => broker_listeners
                .first()
                .map_or_else(String::new, |l| l.name.clone()),
            name => {
                if !broker_listeners.iter().any(|l| l.name == name) {
                    return Err(refuse(
                        "inter.broker.listener.name",
                        format!("{name} is not one of the broker listeners"),
                    ));
                }
                name.to_string()
            }
        };

        let mut advertised = BTreeMap::new();
        for listener in parse_listeners(get("advertised.listeners"), "advertised.listeners")? {
            if listener.host.is_empty() {
                return Err(refuse(
                    "advertised.listeners",
                    format!("{}: give a host clients can reach", listener.name),
                ));
            }
            if !listeners.iter().any(|l| l.name == listener.name) {
                return Err(refuse(
                    "advertised.listeners",
                    format!("{} is not one of the listeners", listener.name),
                ));
            }
            advertised.insert(listener.name, (listener.host, listener.port));
        }

        Ok(ClusterConfig {
            roles,
            voters,
            listeners,
            controller_listener_names,
            inter_broker_listener_name,
            advertised,
            election_timeout,
            broker_session_timeout,
            broker_heartbeat_interval,
        })
    }

    /// The listener clients and other brokers connect to, if this node is a broker.
    pub fn broker_listener(&self) -> Option<&Listener> {
        self.listeners
            .iter()
            .find(|l| l.name == self.inter_broker_listener_name)
    }

    /// The listener the quorum speaks on, if this node is a controller with one.
    pub fn controller_listener(&self) -> Option<&Listener> {
        self.listeners
            .iter()
            .find(|l| self.controller_listener_names.contains(&l.name))
    }

    /// Whether this node forms a quorum with other voters (otherwise it is one of itself).
    pub fn has_peers(&self) -> bool {
        self.voters.len() > 1
    }
}

fn names(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_ascii_uppercase)
        .collect()
}

fn parse_roles(text: &str) -> Result<Roles, Refusal> {
    let mut roles = Roles {
        broker: false,
        controller: false,
    };
    for role in text.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        let slot = match role {
            "broker" => &mut roles.broker,
            "controller" => &mut roles.controller,
            other => {
                return Err(refuse(
                    "process.roles",
                    format!("unknown role {other:?}: expected broker, controller or both"),
                ));
            }
        };
        if std::mem::replace(slot, true) {
            return Err(refuse("process.roles", format!("{role} is listed twice")));
        }
    }
    if !roles.broker && !roles.controller {
        return Err(refuse("process.roles", "give broker, controller or both"));
    }
    Ok(roles)
}

fn parse_voters(text: &str) -> Result<Vec<Voter>, Refusal> {
    let mut voters: Vec<Voter> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = || {
            refuse(
                "controller.quorum.voters",
                format!("{entry:?}: expected ID@HOST:PORT, e.g. 1@controller-1:9093"),
            )
        };
        let (id, address) = entry.split_once('@').ok_or_else(bad)?;
        let id: i32 = id
            .trim()
            .parse()
            .ok()
            .filter(|id| *id >= 0)
            .ok_or_else(bad)?;
        let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(bad)?;
        if host.is_empty() {
            return Err(bad());
        }
        if voters.iter().any(|v| v.id == id) {
            return Err(refuse(
                "controller.quorum.voters",
                format!("voter {id} is listed twice"),
            ));
        }
        voters.push(Voter {
            id,
            host: host.to_string(),
            port,
        });
    }
    voters.sort_by_key(|v| v.id);
    Ok(voters)
}

fn parse_protocol_map(text: &str) -> Result<BTreeMap<String, String>, Refusal> {
    let mut map = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, protocol)) = entry.split_once(':') else {
            return Err(refuse(
                "listener.security.protocol.map",
                format!("{entry:?}: expected NAME:PROTOCOL, e.g. CONTROLLER:PLAINTEXT"),
            ));
        };
        let protocol = protocol.trim().to_ascii_uppercase();
        if !KNOWN_PROTOCOLS.contains(&protocol.as_str()) {
            return Err(refuse(
                "listener.security.protocol.map",
                format!("unknown security protocol {protocol}"),
            ));
        }
        map.insert(name.trim().to_ascii_uppercase(), protocol);
    }
    Ok(map)
}

/// A listener's protocol: from the map; a name that is itself a protocol maps to itself;
/// a controller listener missing from the map is PLAINTEXT (as in Kafka 3.3+).
fn protocol_of<'m>(
    map: &'m BTreeMap<String, String>,
    controller_names: &[String],
    name: &'m str,
) -> Option<&'m str> {
    map.get(name)
        .map(String::as_str)
        .or_else(|| KNOWN_PROTOCOLS.iter().copied().find(|p| *p == name))
        .or_else(|| {
            controller_names
                .iter()
                .any(|n| n == name)
                .then_some("PLAINTEXT")
        })
}

fn parse_listeners(text: &str, key: &'static str) -> Result<Vec<Listener>, Refusal> {
    let mut listeners = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, address) = match entry.split_once("://") {
            Some((name, address)) => (name.trim().to_ascii_uppercase(), address),
            None => ("PLAINTEXT".to_string(), entry),
        };
        let bad = || {
            refuse(
                key,
                format!(
                    "{entry:?}: expected HOST:PORT or NAME://HOST:PORT (an empty host is every interface), e.g. PLAINTEXT://:9092"
                ),
            )
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(bad());
        }
        let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().map_err(|_| bad())?;
        listeners.push(Listener {
            name,
            host: host.to_string(),
            port,
        });
    }
    Ok(listeners)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cluster properties' defaults (config.rs `PROPERTIES` holds the same: config
    /// depends on this module, not the other way round).
    const DEFAULTS: &[(&str, &str)] = &[
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
    ];

    fn parse(overrides: &[(&str, &str)], node_id: i32) -> Result<ClusterConfig, Refusal> {
        let mut values: BTreeMap<&str, &str> = DEFAULTS.iter().copied().collect();
        values.extend(overrides.iter().copied());
        ClusterConfig::parse(|key| values.get(key).copied().unwrap_or(""), node_id)
    }

    #[test]
    fn a_plain_single_node_needs_nothing() {
        let config = parse(&[], 1).unwrap();
        assert_eq!(
            config.roles,
            Roles {
                broker: true,
                controller: true
            }
        );
        assert!(!config.has_peers());
        let broker = config.broker_listener().unwrap();
        assert_eq!((broker.name.as_str(), broker.port), ("PLAINTEXT", 9092));
        assert_eq!(config.inter_broker_listener_name, "PLAINTEXT");
        assert!(config.controller_listener().is_none());
    }

    #[test]
    fn a_kafka_combined_node_of_three() {
        let config = parse(
            &[
                (
                    "controller.quorum.voters",
                    "3@h3:9093,1@h1:9093,2@[::1]:9093",
                ),
                ("listeners", "PLAINTEXT://:9092,CONTROLLER://:9093"),
                ("advertised.listeners", "PLAINTEXT://h1:9092"),
            ],
            1,
        )
        .unwrap();
        assert_eq!(
            config.voters.iter().map(|v| v.id).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(config.voters[1].host, "::1");
        assert!(config.has_peers());
        assert_eq!(config.controller_listener().unwrap().port, 9093);
        assert_eq!(config.advertised["PLAINTEXT"], ("h1".to_string(), 9092));
        let controller_only = parse(
            &[
                ("process.roles", "controller"),
                ("controller.quorum.voters", "1@h1:9093,2@h2:9093,3@h3:9093"),
                ("listeners", "CONTROLLER://:9093"),
            ],
            2,
        )
        .unwrap();
        assert!(controller_only.broker_listener().is_none());
        let broker_only = parse(
            &[
                ("process.roles", "broker"),
                ("controller.quorum.voters", "1@h1:9093"),
                ("listeners", "INTERNAL://:9094"),
                ("listener.security.protocol.map", "INTERNAL:PLAINTEXT"),
            ],
            4,
        )
        .unwrap();
        assert_eq!(broker_only.inter_broker_listener_name, "INTERNAL");
    }

    #[test]
    fn kafkas_rules_are_enforced_with_the_property_named() {
        type Case<'a> = (&'a [(&'a str, &'a str)], i32, &'a str, &'a str);
        let cases: &[Case<'_>] = &[
            (
                &[("process.roles", "broker,worker")],
                1,
                "process.roles",
                "unknown role",
            ),
            (
                &[("process.roles", "broker,broker")],
                1,
                "process.roles",
                "twice",
            ),
            (&[("process.roles", "")], 1, "process.roles", "give broker"),
            (
                &[("controller.quorum.voters", "1@h1")],
                1,
                "controller.quorum.voters",
                "ID@HOST:PORT",
            ),
            (
                &[("controller.quorum.voters", "1@h1:9093,1@h2:9093")],
                1,
                "controller.quorum.voters",
                "twice",
            ),
            (
                &[("controller.quorum.voters", "2@h2:9093,3@h3:9093")],
                1,
                "controller.quorum.voters",
                "not a voter",
            ),
            (
                &[
                    ("process.roles", "controller"),
                    ("listeners", "CONTROLLER://:9093"),
                ],
                1,
                "controller.quorum.voters",
                "needs the voters",
            ),
            (
                &[("process.roles", "broker")],
                1,
                "controller.quorum.voters",
                "controllers' addresses",
            ),
            (
                &[
                    ("process.roles", "broker"),
                    ("controller.quorum.voters", "1@h1:9093"),
                ],
                1,
                "controller.quorum.voters",
                "is a voter",
            ),
            (
                &[("controller.quorum.voters", "1@h1:9093,2@h2:9093")],
                1,
                "listeners",
                "controller.listener.names",
            ),
            (
                &[("listeners", "SSL://:9093")],
                1,
                "listeners",
                "not supported yet",
            ),
            (
                &[("listeners", "INTERNAL://:9094")],
                1,
                "listener.security.protocol.map",
                "INTERNAL:PLAINTEXT",
            ),
            (
                &[("listeners", "PLAINTEXT://:9092,PLAINTEXT://:9093")],
                1,
                "listeners",
                "appears twice",
            ),
            (
                &[("listeners", "PLAINTEXT://:9092,CONTROLLER://:9092")],
                1,
                "listeners",
                "port 9092",
            ),
            (&[("listeners", "localhost")], 1, "listeners", "HOST:PORT"),
            (
                &[("inter.broker.listener.name", "CONTROLLER")],
                1,
                "inter.broker.listener.name",
                "not one of",
            ),
            (
                &[("advertised.listeners", "EXTERNAL://h:1")],
                1,
                "advertised.listeners",
                "not one of",
            ),
            (
                &[("broker.heartbeat.interval.ms", "9000")],
                1,
                "broker.heartbeat.interval.ms",
                "shorter",
            ),
            (&[], -1, "node.id", "0 or more"),
        ];
        for (overrides, node_id, key, says) in cases {
            let refusal = parse(overrides, *node_id).unwrap_err();
            assert_eq!(refusal.key, *key, "{overrides:?}: {refusal:?}");
            assert!(refusal.reason.contains(says), "{overrides:?}: {refusal:?}");
        }
    }
}
