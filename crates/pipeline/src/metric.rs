//! One metric sample, its JSON form and the rules it must satisfy. The same JSON is what
//! clients POST, what the topic carries (with the timestamp always filled in), and what the
//! sink parses back, so anything written to the topic by another producer is checked by the
//! same code.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeSeed;
use serde_json::Value;

use crate::rfc3339;

/// Longest metric name, in bytes.
pub const MAX_NAME_BYTES: usize = 200;
/// Most labels on one metric.
pub const MAX_LABELS: usize = 32;
/// Longest label name, in bytes.
pub const MAX_LABEL_NAME_BYTES: usize = 100;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE_BYTES: usize = 1024;
/// Oldest timestamp the gateway accepts, relative to its clock.
pub const MAX_AGE_MICROS: i64 = 366 * 24 * 3600 * 1_000_000;
/// How far ahead of the gateway's clock a timestamp may be (clock skew).
pub const MAX_FUTURE_MICROS: i64 = 5 * 60 * 1_000_000;

/// A validated sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    /// Microseconds since the Unix epoch.
    pub timestamp_micros: i64,
    pub labels: BTreeMap<String, String>,
}

/// Why a metric was refused: the field (`value`, `labels.host`, `[3].name`) and the rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Invalid {
        Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    fn at_index(mut self, index: usize) -> Invalid {
        self.field = format!("[{index}].{}", self.field);
        self
    }
}

/// The JSON shape before validation. Loose types, so that a wrong type is reported with the
/// field's name rather than a parser position.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetric {
    #[serde(default)]
    name: Value,
    #[serde(default)]
    value: Value,
    #[serde(default)]
    timestamp: Value,
    #[serde(default)]
    labels: Value,
}

/// 0001-01-01T00:00:00Z: the earliest time stored (PostgreSQL and RFC 3339 text agree).
pub const MIN_MICROS: i64 = -62_135_596_800_000_000;
/// 9999-12-31T23:59:59.999999Z: the latest.
pub const MAX_MICROS: i64 = 253_402_300_799_999_999;

/// What to do with a missing timestamp and where the valid range lies.
#[derive(Debug, Clone, Copy)]
pub struct TimePolicy {
    /// Used when the JSON has no timestamp.
    pub default_micros: i64,
    /// Accepted range, inclusive; `None` accepts years 0001 to 9999.
    pub range: Option<(i64, i64)>,
}

impl TimePolicy {
    /// The gateway's policy: missing means now; at most a year old, five minutes ahead.
    pub fn gateway(now_micros: i64) -> TimePolicy {
        TimePolicy {
            default_micros: now_micros,
            range: Some((now_micros - MAX_AGE_MICROS, now_micros + MAX_FUTURE_MICROS)),
        }
    }
}

/// Parses a request body: one metric object or an array of them (at most `max_count`).
pub fn parse_body(
    body: &[u8],
    time: TimePolicy,
    max_count: usize,
) -> Result<Vec<Metric>, BodyError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'[') => {
            // Counted while parsing: an array of a million small objects is refused at the
            // element past the limit, not after all of them were allocated.
            let mut deserializer = serde_json::Deserializer::from_slice(body);
            let exceeded = std::cell::Cell::new(false);
            let bounded = BoundedArray {
                max: max_count,
                exceeded: &exceeded,
            };
            let raws = match bounded.deserialize(&mut deserializer) {
                Ok(raws) => raws,
                Err(_) if exceeded.get() => {
                    return Err(BodyError::TooMany { max: max_count });
                }
                Err(err) => return Err(BodyError::Json(err)),
            };
            deserializer.end().map_err(BodyError::Json)?;
            if raws.is_empty() {
                return Err(BodyError::Invalid(Invalid::new(
                    "[]",
                    "no metrics in the array",
                )));
            }
            raws.into_iter()
                .enumerate()
                .map(|(i, raw)| validate(raw, time).map_err(|e| BodyError::Invalid(e.at_index(i))))
                .collect()
        }
        Some(b'{') => {
            let raw: RawMetric = serde_json::from_slice(body).map_err(BodyError::Json)?;
            Ok(vec![validate(raw, time).map_err(BodyError::Invalid)?])
        }
        _ => Err(BodyError::Invalid(Invalid::new(
            "body",
            "expected a JSON object (one metric) or array (several)",
        ))),
    }
}

/// Deserializes a JSON array of metrics, failing at the element after `max`.
struct BoundedArray<'a> {
    max: usize,
    /// Set when the limit stopped the parse, to tell that error from malformed JSON
    /// (serde's errors carry only text).
    exceeded: &'a std::cell::Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for BoundedArray<'_> {
    type Value = Vec<RawMetric>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for BoundedArray<'_> {
    type Value = Vec<RawMetric>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "an array of at most {} metrics", self.max)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut raws = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max).min(1024));
        while let Some(raw) = seq.next_element::<RawMetric>()? {
            if raws.len() == self.max {
                self.exceeded.set(true);
                return Err(serde::de::Error::custom(format!(
                    "more than {} metrics",
                    self.max
                )));
            }
            raws.push(raw);
        }
        Ok(raws)
    }
}

/// Parses one metric as stored in the topic.
pub fn parse_one(bytes: &[u8], time: TimePolicy) -> Result<Metric, BodyError> {
    let raw: RawMetric = serde_json::from_slice(bytes).map_err(BodyError::Json)?;
    validate(raw, time).map_err(BodyError::Invalid)
}

/// Why a body was refused.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("malformed JSON: {0}")]
    Json(serde_json::Error),
    #[error("{0}")]
    Invalid(Invalid),
    #[error("more than {max} metrics in one request")]
    TooMany { max: usize },
}

fn validate(raw: RawMetric, time: TimePolicy) -> Result<Metric, Invalid> {
    let name = match raw.name {
        Value::String(name) => name,
        Value::Null => return Err(Invalid::new("name", "required")),
        _ => return Err(Invalid::new("name", "must be a string")),
    };
    check_name(&name)?;
    let value = match raw.value {
        Value::Number(n) => n
            .as_f64()
            .filter(|v| v.is_finite())
            .ok_or_else(|| Invalid::new("value", "must be a finite number"))?,
        Value::Null => return Err(Invalid::new("value", "required")),
        _ => return Err(Invalid::new("value", "must be a number")),
    };
    let timestamp_micros = match raw.timestamp {
        Value::Null => time.default_micros,
        Value::String(text) => rfc3339::parse_micros(&text)
            .map_err(|why| Invalid::new("timestamp", format!("not RFC 3339 ({why})")))?,
        _ => {
            return Err(Invalid::new(
                "timestamp",
                "must be an RFC 3339 string, e.g. 2026-11-22T07:47:24Z",
            ));
        }
    };
    let (oldest, newest) = time.range.unwrap_or((MIN_MICROS, MAX_MICROS));
    if !(oldest..=newest).contains(&timestamp_micros) {
        let why = if timestamp_micros < oldest {
            format!(
                "before {}, the oldest accepted",
                rfc3339::format_micros(oldest)
            )
        } else {
            format!(
                "after {}, the newest accepted",
                rfc3339::format_micros(newest)
            )
        };
        return Err(Invalid::new("timestamp", why));
    }
    let labels = match raw.labels {
        Value::Null => BTreeMap::new(),
        Value::Object(map) => check_labels(map)?,
        _ => return Err(Invalid::new("labels", "must be an object of strings")),
    };
    Ok(Metric {
        name,
        value,
        timestamp_micros,
        labels,
    })
}

/// Names like Prometheus's, plus `.` and `-`: `[A-Za-z_][A-Za-z0-9_.:-]*`.
fn check_name(name: &str) -> Result<(), Invalid> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(Invalid::new(
            "name",
            format!("must be 1 to {MAX_NAME_BYTES} bytes"),
        ));
    }
    let mut chars = name.bytes();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_');
    let rest_ok =
        chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b':' | b'-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(Invalid::new("name", "must match [A-Za-z_][A-Za-z0-9_.:-]*"))
    }
}

fn check_labels(map: serde_json::Map<String, Value>) -> Result<BTreeMap<String, String>, Invalid> {
    if map.len() > MAX_LABELS {
        return Err(Invalid::new(
            "labels",
            format!("{} labels; at most {MAX_LABELS}", map.len()),
        ));
    }
    let mut labels = BTreeMap::new();
    for (key, value) in map {
        let field = || format!("labels.{key}");
        let key_ok = !key.is_empty()
            && key.len() <= MAX_LABEL_NAME_BYTES
            && key.bytes().enumerate().all(|(i, c)| {
                c == b'_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
            });
        if !key_ok {
            return Err(Invalid::new(
                field(),
                format!(
                    "label names must match [A-Za-z_][A-Za-z0-9_]* and be at most {MAX_LABEL_NAME_BYTES} bytes"
                ),
            ));
        }
        let Value::String(value) = value else {
            return Err(Invalid::new(field(), "label values must be strings"));
        };
        // PostgreSQL's JSONB cannot hold U+0000: refused here rather than by the database.
        if value.contains('\0') {
            return Err(Invalid::new(field(), "must not contain U+0000"));
        }
        if value.len() > MAX_LABEL_VALUE_BYTES {
            return Err(Invalid::new(
                field(),
                format!("longer than {MAX_LABEL_VALUE_BYTES} bytes"),
            ));
        }
        labels.insert(key, value);
    }
    Ok(labels)
}

impl Metric {
    /// Appends the topic's JSON for this metric to `out`; the timestamp is always written.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        const INFALLIBLE: &str = "strings, a finite f64 and a map of strings always serialize";
        out.extend_from_slice(b"{\"name\":");
        serde_json::to_writer(&mut *out, &self.name).expect(INFALLIBLE);
        out.extend_from_slice(b",\"value\":");
        serde_json::to_writer(&mut *out, &self.value).expect(INFALLIBLE);
        out.extend_from_slice(b",\"timestamp\":\"");
        rfc3339::write_micros(out, self.timestamp_micros);
        out.extend_from_slice(b"\",\"labels\":");
        serde_json::to_writer(&mut *out, &self.labels).expect(INFALLIBLE);
        out.push(b'}');
    }

    /// Appends the series key, `name{k=v,...}` with labels in name order: every sample of
    /// one series lands in one partition, so a series stays in order.
    pub fn write_series_key(&self, key: &mut Vec<u8>) {
        key.extend_from_slice(self.name.as_bytes());
        key.push(b'{');
        for (i, (k, v)) in self.labels.iter().enumerate() {
            if i > 0 {
                key.push(b',');
            }
            key.extend_from_slice(k.as_bytes());
            key.push(b'=');
            key.extend_from_slice(v.as_bytes());
        }
        key.push(b'}');
    }

    /// The labels as a JSON object, for the database's JSONB column.
    pub fn labels_json(&self) -> String {
        serde_json::to_string(&self.labels).expect("a map of strings always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_333_644_000_000;

    fn parse(body: &str) -> Result<Vec<Metric>, BodyError> {
        parse_body(body.as_bytes(), TimePolicy::gateway(NOW), 100)
    }

    fn invalid_field(body: &str) -> String {
        match parse(body) {
            Err(BodyError::Invalid(invalid)) => invalid.field,
            other => panic!("{body}: expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn one_metric_and_an_array() {
        let one =
            parse(r#"{"name":"cpu_usage","value":85.5,"labels":{"host":"server-01"}}"#).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].timestamp_micros, NOW);
        assert_eq!(one[0].labels["host"], "server-01");
        let many = parse(
            r#"[{"name":"a","value":1},{"name":"b","value":-2e3,"timestamp":"2026-11-22T07:00:00Z"}]"#,
        )
        .unwrap();
        assert_eq!(many.len(), 2);
        assert_eq!(many[1].value, -2000.0);
        assert_eq!(many[1].timestamp_micros, NOW - 2_844_000_000);
    }

    #[test]
    fn each_rule_names_its_field() {
        assert_eq!(invalid_field(r#"{"value":1}"#), "name");
        assert_eq!(invalid_field(r#"{"name":"9lives","value":1}"#), "name");
        assert_eq!(invalid_field(r#"{"name":"a b","value":1}"#), "name");
        assert_eq!(invalid_field(r#"{"name":"a"}"#), "value");
        assert_eq!(invalid_field(r#"{"name":"a","value":"85"}"#), "value");
        assert_eq!(
            invalid_field(r#"{"name":"a","value":1,"timestamp":"noon"}"#),
            "timestamp"
        );
        assert_eq!(
            invalid_field(r#"{"name":"a","value":1,"timestamp":1700000000}"#),
            "timestamp"
        );
        assert_eq!(
            invalid_field(r#"{"name":"a","value":1,"timestamp":"2020-01-01T00:00:00Z"}"#),
            "timestamp"
        );
        assert_eq!(
            invalid_field(r#"{"name":"a","value":1,"timestamp":"2026-11-22T08:00:00Z"}"#),
            "timestamp"
        );
        assert_eq!(
            invalid_field(r#"{"name":"a","value":1,"labels":{"h":1}}"#),
            "labels.h"
        );
        assert_eq!(
            invalid_field(r#"{"name":"a","value":1,"labels":{"1h":"x"}}"#),
            "labels.1h"
        );
        assert_eq!(
            invalid_field(r#"{"name":"a","value":1,"labels":[]}"#),
            "labels"
        );
        assert_eq!(
            invalid_field(r#"{"name":"a","value":1,"labels":{"h":"a\u0000b"}}"#),
            "labels.h"
        );
        assert_eq!(
            invalid_field(r#"[{"name":"a","value":1},{"name":"b"}]"#),
            "[1].value"
        );
        assert_eq!(invalid_field("[]"), "[]");
        assert_eq!(invalid_field("42"), "body");
        let many_labels: Vec<String> = (0..=MAX_LABELS)
            .map(|i| format!("\"l{i}\":\"v\""))
            .collect();
        assert_eq!(
            invalid_field(&format!(
                r#"{{"name":"a","value":1,"labels":{{{}}}}}"#,
                many_labels.join(",")
            )),
            "labels"
        );
        let long = "v".repeat(MAX_LABEL_VALUE_BYTES + 1);
        assert_eq!(
            invalid_field(&format!(
                r#"{{"name":"a","value":1,"labels":{{"h":"{long}"}}}}"#
            )),
            "labels.h"
        );
    }

    #[test]
    fn malformed_json_unknown_fields_and_too_many() {
        assert!(matches!(
            parse(r#"{"name":"a","value":1"#),
            Err(BodyError::Json(_))
        ));
        assert!(matches!(
            parse(r#"{"name":"a","value":1,"unit":"s"}"#),
            Err(BodyError::Json(_))
        ));
        assert!(matches!(
            parse(r#"{"name":"a","value":1e999}"#),
            Err(BodyError::Json(_))
        ));
        let body = format!("[{}]", vec![r#"{"name":"a","value":1}"#; 101].join(","));
        assert!(matches!(parse(&body), Err(BodyError::TooMany { max: 100 })));
    }

    #[test]
    fn topic_json_round_trips_and_keys_are_per_series() {
        let metric = &parse(r#"{"name":"cpu","value":0.1,"labels":{"z":"1","a":"2"}}"#).unwrap()[0];
        let mut stored = Vec::new();
        metric.write_json(&mut stored);
        let any_time = TimePolicy {
            default_micros: 0,
            range: None,
        };
        assert_eq!(&parse_one(&stored, any_time).unwrap(), metric);
        // Whatever the producer's timestamp, nothing outside years 0001-9999 gets through.
        let far = TimePolicy {
            default_micros: i64::MAX,
            range: None,
        };
        assert!(parse_one(br#"{"name":"a","value":1}"#, far).is_err());
        assert!(
            parse_one(
                br#"{"name":"a","value":1,"timestamp":"0000-01-01T00:00:00Z"}"#,
                any_time
            )
            .is_err()
        );
        let mut key = Vec::new();
        metric.write_series_key(&mut key);
        assert_eq!(key, b"cpu{a=2,z=1}");
        assert_eq!(metric.labels_json(), r#"{"a":"2","z":"1"}"#);
    }
}
