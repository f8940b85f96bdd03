//! Keeps `docs/policy.md` honest: every `yaml` block in it must parse and
//! validate, and every field name the model prints must be documented.

use std::collections::BTreeSet;

use crate::policy::{Document, parse_documents};

const POLICY_MD: &str = include_str!("../../../docs/policy.md");

/// The bodies of the ```` ```yaml ```` blocks.
fn yaml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim() == "```yaml" => current = Some(String::new()),
            None => {}
            Some(_) if line.trim_start().starts_with("```") => {
                blocks.extend(current.take());
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    blocks
}

fn all_documents() -> Vec<Document> {
    let blocks = yaml_blocks(POLICY_MD);
    assert!(blocks.len() >= 3, "docs/policy.md lost its examples");
    blocks
        .iter()
        .flat_map(|b| parse_documents(b).unwrap_or_else(|e| panic!("{e}\nin block:\n{b}")))
        .collect()
}

fn keys(value: &serde_json::Value, out: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                out.insert(k.clone());
                keys(v, out);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

#[test]
fn every_yaml_example_in_the_docs_parses() {
    let docs = all_documents();
    assert!(docs.iter().any(|d| matches!(d, Document::Policy(_))));
    assert!(docs.iter().any(|d| matches!(d, Document::Endpoints(_))));
}

#[test]
fn the_docs_example_is_the_design_example() {
    let design = parse_documents(super::parse::tests::DESIGN_EXAMPLE).expect("design");
    let docs = all_documents();
    assert_eq!(docs[..design.len()], design[..]);
}

#[test]
fn every_field_used_in_the_examples_is_documented() {
    let mut names = BTreeSet::new();
    for doc in all_documents() {
        keys(&serde_json::to_value(&doc).expect("json"), &mut names);
    }
    // The examples must exercise the whole model, or this test proves little.
    for expected in [
        "grpc",
        "headers",
        "path",
        "perClient",
        "slowCall",
        "honorRetryAfter",
    ] {
        assert!(names.contains(expected), "no example uses {expected}");
    }
    let undocumented: Vec<&String> = names
        .iter()
        .filter(|n| {
            !POLICY_MD.contains(&format!("`{n}`"))
                && !POLICY_MD.contains(&format!(".{n}`"))
                && !POLICY_MD.contains(&format!("`{n}."))
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "not in docs/policy.md: {undocumented:?}"
    );
}

/// The `yaml invalid` block and the `text` block after it.
fn invalid_example(markdown: &str) -> (String, String) {
    let after = markdown
        .split_once("```yaml invalid\n")
        .map(|(_, rest)| rest)
        .expect("an invalid example");
    let (input, rest) = after.split_once("```\n").expect("end of invalid example");
    let text = rest
        .split_once("```text\n")
        .and_then(|(_, t)| t.split_once("```"))
        .map(|(t, _)| t)
        .expect("the expected errors");
    (input.to_owned(), text.to_owned())
}

#[test]
fn the_documented_errors_are_the_real_errors() {
    let (input, expected) = invalid_example(POLICY_MD);
    let err = parse_documents(&input).expect_err("the example is invalid");
    assert_eq!(format!("{err}\n"), expected);
}
