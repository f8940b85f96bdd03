//! The schema bounds and CEL rules (`x-kubernetes-validations`) of the CRD,
//! so the API server itself refuses what levee-proto's validator refuses
//! wherever a schema can say it. Each [`Rule`] names the validator check it
//! repeats by its field path and carries two values: one the validator
//! accepts at the bound and one just past it. The tests hold every rule to
//! both (the Rust validator here; the CEL text itself, in a CEL engine, in
//! the e2e module `kubernetes_crd`), so a rule and its validator check
//! cannot drift apart.
//!
//! Not here, left to the validating webhook (it runs the validator): which
//! failure-condition and gRPC-status names exist, duplicates in lists,
//! route names being unique, `grpcOn: [ok]`, a backoff or open time whose
//! `base` exceeds the *default* `max` (the rules compare only what is
//! written), and a route's timeouts merged over the service's.

use std::sync::LazyLock;

use serde_json::{Value, json};

mod table;

/// What a rule adds to the schema node of its field.
#[derive(Clone, Debug, PartialEq)]
pub enum Check {
    /// `maximum`.
    Maximum(u64),
    /// `minimum`.
    Minimum(i64),
    /// `minimum: 0` with `exclusiveMinimum: true`.
    AboveZero,
    /// `pattern` (RE2).
    Pattern(&'static str),
    /// `minItems`.
    MinItems(u64),
    /// `maxItems`.
    MaxItems(u64),
    /// An `x-kubernetes-validations` entry.
    Cel {
        /// The CEL expression, with `self` the field's value.
        rule: String,
        /// What the API server says when it is false.
        message: String,
    },
}

/// One bound of the schema, tied to the validator check it repeats.
#[derive(Clone, Debug)]
pub struct Rule {
    /// The field under `spec`, `.`-separated, `[]` for every list item
    /// (`outbound.routes[].retry.maxRetries`).
    pub field: &'static str,
    /// What the schema says.
    pub check: Check,
    /// A value of the field (YAML) that the rule and the validator accept.
    pub accept: &'static str,
    /// A value of the field (YAML) that both refuse, at the field's path.
    pub reject: &'static str,
}

impl Rule {
    /// The validator's path of the field (`spec.outbound.routes[0].retry`).
    pub fn validator_path(&self) -> String {
        format!("spec.{}", self.field.replace("[]", "[0]"))
    }
}

/// Every rule of the CRD's schema.
pub fn rules() -> &'static [Rule] {
    static RULES: LazyLock<Vec<Rule>> = LazyLock::new(table::all_rules);
    &RULES
}

/// Adds every rule to `schema` (the CRD's `openAPIV3Schema`) and drops the
/// `format`s Kubernetes does not know (schemars writes `uint32` for a `u32`;
/// the API server would warn about each).
pub fn apply(schema: &mut Value) -> Result<(), String> {
    drop_unsigned_formats(schema);
    for rule in rules() {
        let node = node_mut(schema, rule.field)?;
        let object = node
            .as_object_mut()
            .ok_or_else(|| format!("{}: the schema is not an object", rule.field))?;
        match &rule.check {
            Check::Maximum(n) => {
                object.insert("maximum".into(), json!(n));
            }
            Check::Minimum(n) => {
                object.insert("minimum".into(), json!(n));
            }
            Check::AboveZero => {
                object.insert("minimum".into(), json!(0));
                object.insert("exclusiveMinimum".into(), json!(true));
            }
            Check::Pattern(p) => {
                object.insert("pattern".into(), json!(p));
            }
            Check::MinItems(n) => {
                object.insert("minItems".into(), json!(n));
            }
            Check::MaxItems(n) => {
                object.insert("maxItems".into(), json!(n));
            }
            Check::Cel { rule, message } => {
                let list = object
                    .entry("x-kubernetes-validations")
                    .or_insert_with(|| json!([]));
                if let Some(list) = list.as_array_mut() {
                    list.push(json!({"rule": rule, "message": message}));
                }
            }
        }
    }
    Ok(())
}

fn drop_unsigned_formats(node: &mut Value) {
    match node {
        Value::Object(map) => {
            if map
                .get("format")
                .and_then(Value::as_str)
                .is_some_and(|f| f.starts_with("uint"))
            {
                map.remove("format");
            }
            map.values_mut().for_each(drop_unsigned_formats);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_unsigned_formats),
        _ => {}
    }
}

/// The schema node of `field` under `spec`.
pub fn node_mut<'a>(schema: &'a mut Value, field: &str) -> Result<&'a mut Value, String> {
    let mut node = schema
        .pointer_mut("/properties/spec")
        .ok_or("the schema has no spec")?;
    for part in field.split('.') {
        let (name, item) = match part.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (part, false),
        };
        node = node
            .get_mut("properties")
            .and_then(|p| p.get_mut(name))
            .ok_or_else(|| format!("{field}: no property {name:?} in the schema"))?;
        if item {
            node = node
                .get_mut("items")
                .ok_or_else(|| format!("{field}: {name:?} is not a list"))?;
        }
    }
    Ok(node)
}
