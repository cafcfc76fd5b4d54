//! The Prometheus text format (version 0.0.4), written one family at a time, and a lock-free
//! latency [`Histogram`]. Shared by the broker's `/metrics` and the metrics pipeline's
//! gateway and sink, so that escaping, `# HELP`/`# TYPE` lines and histogram buckets are
//! written in one place.
//!
//! Must not depend on anything else in the broker: it only formats numbers.

use std::fmt::{Display, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A cumulative latency histogram (Prometheus semantics: `le` buckets, sum, count).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|le| seconds <= *le) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// The kind of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Label pairs of one sample; values are escaped when written.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

/// Writes metric families into a string.
#[derive(Debug, Default)]
pub struct TextWriter {
    out: String,
}

impl TextWriter {
    pub fn new() -> Self {
        TextWriter::default()
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let _ = writeln!(
            self.out,
            "# HELP {name} {help}\n# TYPE {name} {}",
            kind.name()
        );
        self
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: Labels<'_>, value: impl Display) -> &mut Self {
        self.out.push_str(name);
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {value}");
        self
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Display) {
        self.family(name, kind, help).sample(name, &[], value);
    }

    /// The `_bucket`, `_sum` and `_count` samples of a histogram of the current family.
    pub fn histogram(&mut self, name: &str, labels: Labels<'_>, histogram: &Histogram) {
        let mut cumulative = 0;
        for (le, bucket) in LATENCY_BUCKETS.iter().zip(&histogram.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = write!(self.out, "{name}_bucket");
            write_labels(&mut self.out, labels, Some(&le.to_string()));
            let _ = writeln!(self.out, " {cumulative}");
        }
        let count = histogram.count();
        let _ = write!(self.out, "{name}_bucket");
        write_labels(&mut self.out, labels, Some("+Inf"));
        let _ = writeln!(self.out, " {count}");
        let sum = histogram.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = write!(self.out, "{name}_sum");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {sum}");
        let _ = write!(self.out, "{name}_count");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {count}");
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn write_labels(out: &mut String, labels: Labels<'_>, le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    let all = labels.iter().copied().chain(le.map(|le| ("le", le)));
    for (key, value) in all {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(key);
        out.push_str("=\"");
        escape_into(out, value);
        out.push('"');
    }
    out.push('}');
}

/// Escapes a label value (backslash, quote, newline).
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let mut w = TextWriter::new();
        w.family("x", Kind::Histogram, "help");
        w.histogram("x", &[("api", "Produce")], &h);
        let out = w.finish();
        assert!(
            out.starts_with("# HELP x help\n# TYPE x histogram\n"),
            "{out}"
        );
        for line in [
            "x_bucket{api=\"Produce\",le=\"0.0005\"} 1\n",
            "x_bucket{api=\"Produce\",le=\"0.005\"} 2\n",
            "x_bucket{api=\"Produce\",le=\"10\"} 2\n",
            "x_bucket{api=\"Produce\",le=\"+Inf\"} 3\n",
            "x_count{api=\"Produce\"} 3\n",
        ] {
            assert!(out.contains(line), "{line} missing from {out}");
        }
        let mut w = TextWriter::new();
        w.histogram("y", &[], &h);
        let out = w.finish();
        assert!(out.contains("y_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("y_count 3\n"), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut w = TextWriter::new();
        w.sample("m", &[("topic", "a\"b\\c\nd")], 1);
        assert_eq!(w.finish(), "m{topic=\"a\\\"b\\\\c\\nd\"} 1\n");
    }
}
