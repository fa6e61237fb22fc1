//! The Prometheus text exposition format, parsed just enough for tests:
//! sample lines `name{label="value",...} number`, comments skipped.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::http;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name, for example `veza_connections_open`.
    pub name: String,
    /// The labels, for example `shard="0"`.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// A parsed `/metrics` answer.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The text as the server sent it, for failure messages.
    pub text: String,
    /// Every sample in order.
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// `GET /metrics` from the server at `addr`; fails the test unless it
    /// answers 200 with parseable text.
    pub fn fetch(addr: SocketAddr) -> Self {
        let response = http::get(addr, "/metrics");
        assert_eq!(
            response.status,
            200,
            "GET /metrics: {}",
            response.body_text()
        );
        Self::parse(&response.body_text())
    }

    /// Parses exposition text; fails the test on a malformed sample line.
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| {
                parse_sample(line).unwrap_or_else(|| panic!("malformed sample line {line:?}"))
            })
            .collect();
        Self {
            text: text.to_owned(),
            samples,
        }
    }

    /// Samples named `name` whose labels include every pair in `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(*value))
        })
    }

    /// The value of the one series named `name` with `labels`; `None` if
    /// there is none. Fails the test if several series match.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self.matching(name, labels).collect();
        assert!(
            found.len() <= 1,
            "{name} {labels:?} matches {} series; name them all: {found:?}",
            found.len()
        );
        found.first().map(|sample| sample.value)
    }

    /// The sum over every series named `name` with `labels` (0 if none), for
    /// example a counter over all shards.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|sample| sample.value).sum()
    }

    /// Whether any series named `name` with `labels` exists.
    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.matching(name, labels).next().is_some()
    }

    /// The sample lines of `name` (and of its histogram parts), for messages.
    pub fn lines_of(&self, name: &str) -> String {
        let lines: Vec<&str> = self
            .text
            .lines()
            .filter(|line| line.starts_with(name))
            .collect();
        if lines.is_empty() {
            format!("(no {name} series at all)")
        } else {
            lines.join("\n")
        }
    }
}

/// `veza_limit_hits_total` summed over shards for one `limit`.
pub fn limit_hits(metrics: &Metrics, limit: &str) -> f64 {
    metrics.sum("veza_limit_hits_total", &[("limit", limit)])
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if rest.starts_with('{') {
        let (parsed, after) = parse_labels(&rest[1..])?;
        labels = parsed;
        rest = after;
    }
    // A timestamp may follow the value; it is ignored.
    let value_text = rest.split_whitespace().next()?;
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Parses `key="value",...}` and returns the labels and the text after `}`.
fn parse_labels(mut text: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        text = text.trim_start_matches([',', ' ']);
        if let Some(after) = text.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after_key) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after_key.char_indices();
        let value_end = loop {
            let (index, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    escaped => value.push(escaped),
                },
                '"' => break index,
                other => value.push(other),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        text = &after_key[value_end + 1..];
    }
}
