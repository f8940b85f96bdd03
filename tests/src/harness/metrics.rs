//! Reads Prometheus / OpenMetrics text: samples by name and labels.

use std::collections::BTreeMap;

/// One sample line: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A scraped `/metrics` page.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Metrics {
    pub fn parse(text: &str) -> Result<Metrics, String> {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(parse_line)
            .collect::<Result<_, _>>()?;
        Ok(Metrics {
            text: text.to_owned(),
            samples,
        })
    }

    /// Samples called `name` whose labels include every pair of `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
        })
    }

    /// The sum of the matching samples, or `None` when none match.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, labels)
            .map(|s| s.value)
            .reduce(|a, b| a + b)
    }

    /// The sum of the matching samples, 0 when none match.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.sum(name, labels).unwrap_or(0.0)
    }

    /// Whether a metric family of this name appears (in `# TYPE` or a sample).
    pub fn has_family(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name.starts_with(name))
            || self.text.lines().any(|l| {
                l.strip_prefix("# TYPE ")
                    .is_some_and(|rest| rest.split_whitespace().next() == Some(name))
            })
    }
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let bad = |why: &str| format!("bad metrics line ({why}): {line:?}");
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let (labels, rest) = parse_labels(&line[open + 1..]).map_err(|e| bad(&e))?;
            (&line[..open], labels, rest)
        }
        None => {
            let (name, rest) = line.split_once(' ').ok_or_else(|| bad("no value"))?;
            (name, BTreeMap::new(), rest)
        }
    };
    let value = rest
        .split_whitespace()
        .next()
        .ok_or_else(|| bad("no value"))?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|_| bad("value is not a number"))?,
    };
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Parses `k="v",k2="v2"}` and returns the labels and what follows `}`.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (key, after) = rest.split_once("=\"").ok_or("label without =\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("dangling escape".into()),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        rest = &after[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# HELP levee_requests Requests.
# TYPE levee_requests counter
levee_requests_total{direction="outbound",service="a.default:80",route="",code="200",outcome="success"} 3
levee_requests_total{direction="outbound",service="a.default:80",route="",code="503",outcome="failure"} 1
levee_requests_created{direction="outbound"} 1.7e9
levee_request_duration_seconds_bucket{direction="outbound",le="+Inf"} 4
levee_request_duration_seconds_count{direction="outbound"} 4
levee_policy_version 2
odd{v="quote \" and \\ back,slash"} 1.5
# EOF
"#;

    #[test]
    fn parses_and_sums_by_labels() {
        let m = Metrics::parse(PAGE).unwrap();
        assert_eq!(
            m.sum("levee_requests_total", &[("service", "a.default:80")]),
            Some(4.0)
        );
        assert_eq!(m.sum("levee_requests_total", &[("code", "200")]), Some(3.0));
        assert_eq!(m.sum("levee_requests_total", &[("code", "404")]), None);
        assert_eq!(
            m.value("levee_request_duration_seconds_bucket", &[("le", "+Inf")]),
            4.0
        );
        assert_eq!(m.value("levee_policy_version", &[]), 2.0);
        assert_eq!(m.value("odd", &[("v", "quote \" and \\ back,slash")]), 1.5);
        assert!(m.has_family("levee_requests"));
        assert!(!m.has_family("levee_retries"));
    }

    #[test]
    fn rejects_garbage() {
        assert!(Metrics::parse("levee_x{a=\"1\" 2").is_err());
        assert!(Metrics::parse("levee_x abc").is_err());
    }
}
