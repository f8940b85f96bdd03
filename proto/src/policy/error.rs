//! Validation errors: every problem in a file, each with its document and field path.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One problem in one document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// 1-based index of the document in the file (0: not from a file, e.g. a protobuf message).
    pub document: usize,
    /// Field path, e.g. `spec.outbound.routes[0].timeouts.perTry` (empty for the whole document).
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// `Kind namespace/name` when known, e.g. `ResiliencePolicy shop/payments`.
    pub object: Option<String>,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.document, &self.object) {
            (0, Some(object)) => write!(f, "{object}: ")?,
            (0, None) => {}
            (n, Some(object)) => write!(f, "document {n} ({object}): ")?,
            (n, None) => write!(f, "document {n}: ")?,
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// All problems found in a policy file (never empty when returned as an error).
/// Serialises as a list of problems.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PolicyErrors(pub Vec<FieldError>);

impl PolicyErrors {
    /// Whether there are no problems.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problems.
    pub fn iter(&self) -> impl Iterator<Item = &FieldError> {
        self.0.iter()
    }
}

impl fmt::Display for PolicyErrors {
    /// One line per problem.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

/// Collects problems under a growing field path.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    pub(crate) errors: Vec<FieldError>,
    pub(crate) document: usize,
    pub(crate) object: Option<String>,
}

impl Problems {
    pub(crate) fn new(document: usize, object: Option<String>) -> Self {
        Problems {
            errors: Vec::new(),
            document,
            object,
        }
    }

    /// Records `message` at `path`.
    pub(crate) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            document: self.document,
            path: path.into(),
            message: message.into(),
            object: self.object.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_line_per_problem() {
        let errs = PolicyErrors(vec![
            FieldError {
                document: 1,
                path: "spec.outbound.retry.backoff.base".into(),
                message: "\"25\" is not a duration (e.g. 25ms)".into(),
                object: Some("ResiliencePolicy shop/payments".into()),
            },
            FieldError {
                document: 2,
                path: String::new(),
                message: "not a mapping".into(),
                object: None,
            },
        ]);
        assert_eq!(
            errs.to_string(),
            "document 1 (ResiliencePolicy shop/payments): spec.outbound.retry.backoff.base: \
             \"25\" is not a duration (e.g. 25ms)\ndocument 2: not a mapping"
        );
    }
}
