"""Offline checks of Levee's Kubernetes manifests and CRD (run by the tests
in the harness's Python environment, target/levee-py).

  kube_check.py manifests CRD.yaml RENDERED.yaml VERSION...
      every object of RENDERED.yaml: built-in kinds with kubernetes-validate
      in strict mode for each VERSION; ResiliencePolicy objects against the
      CRD's own schema (below). Prints one line per object and version.
  kube_check.py versions
      the Kubernetes minor versions kubernetes-validate knows, oldest first.
  kube_check.py policies CRD.yaml FILE...
      every ResiliencePolicy document in the files against the CRD's schema:
      prints "ok FILE NAME" or "invalid FILE NAME: PROBLEMS" per document.
      A FILE.yaml is read as kubectl reads it (YAML 1.1: an unquoted `on:`
      key is "true"); a FILE.json holds the documents as leveectl read them.
  kube_check.py rules CRD.yaml RULES.json
      for each {"field", "accept", "reject"} (YAML values of a field under
      spec): the accepted value passes the field's schema and CEL rules,
      the rejected one does not. Prints one line per rule.

"Against the CRD's schema" does what the API server does with a custom
resource, as far as it can be done here: JSON-schema validation of the
openAPIV3Schema (OpenAPI 3.0 keywords; unknown fields refused, as with
kubectl's default --validate=strict), and every x-kubernetes-validations
CEL rule evaluated with cel-python on the typed value (a `number` field's
integer is a double, as the API server converts it). Exit status 1 when a
check fails.
"""

import json
import sys

import celpy
import jsonschema
import kubernetes_validate
import yaml


def crd_schema(path):
    with open(path) as f:
        crd = yaml.safe_load(f)
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def strict(schema):
    """A copy of schema where an object with properties refuses others,
    and `nullable: true` admits null (OpenAPI 3.0 -> JSON schema)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if "properties" in schema and "additionalProperties" not in schema \
            and not schema.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if schema.get("nullable") and "type" in schema:
        out["type"] = [schema["type"], "null"]
    return out


def to_cel(value, schema):
    """The CEL value the API server builds for value under schema."""
    kind = schema.get("type")
    if value is None:
        return None
    if kind == "number":
        return celpy.celtypes.DoubleType(float(value))
    if kind == "integer":
        return celpy.celtypes.IntType(value)
    if kind == "boolean":
        return celpy.celtypes.BoolType(value)
    if kind == "string":
        return celpy.celtypes.StringType(value)
    if kind == "array":
        items = schema.get("items", {})
        return celpy.celtypes.ListType([to_cel(v, items) for v in value])
    if kind == "object":
        props = schema.get("properties", {})
        return celpy.celtypes.MapType({
            celpy.celtypes.StringType(k): to_cel(v, props.get(k, {}))
            for k, v in value.items() if v is not None
        })
    return celpy.json_to_cel(value)


CEL = celpy.Environment()
PROGRAMS = {}


def cel_true(rule, value, schema):
    if rule not in PROGRAMS:
        PROGRAMS[rule] = CEL.program(CEL.compile(rule))
    try:
        result = PROGRAMS[rule].evaluate({"self": to_cel(value, schema)})
    except celpy.CELEvalError:
        return False  # a rule that errors refuses the object, as in the API server
    return isinstance(result, celpy.celtypes.BoolType) and bool(result)


def cel_problems(value, schema, path):
    """Every CEL rule of schema and its children that value breaks."""
    problems = []
    if value is None or not isinstance(schema, dict):
        return problems
    for v in schema.get("x-kubernetes-validations", []):
        if not cel_true(v["rule"], value, schema):
            problems.append("%s: %s" % (path or "<root>", v.get("message", v["rule"])))
    if isinstance(value, dict):
        for k, child in schema.get("properties", {}).items():
            if k in value:
                problems += cel_problems(value[k], child, "%s.%s" % (path, k) if path else k)
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            problems += cel_problems(item, schema["items"], "%s[%d]" % (path, i))
    return problems


def schema_problems(value, schema, path=""):
    validator = jsonschema.Draft4Validator(strict(schema))
    problems = []
    for e in validator.iter_errors(value):
        where = ".".join(str(p) for p in [path] + list(e.absolute_path) if p != "")
        problems.append("%s: %s" % (where or "<root>", e.message))
    if not problems:
        problems = cel_problems(value, schema, path)
    return problems


def json_keys(value):
    """Map keys as kubectl sends them: YAML 1.1 reads `on:` as the boolean
    true, and sigs.k8s.io/yaml turns that key into the string "true"."""
    if isinstance(value, dict):
        return {(str(k).lower() if isinstance(k, bool) else str(k)): json_keys(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [json_keys(v) for v in value]
    return value


def load_all(path):
    """The documents of a file: JSON (a list of documents, already read the
    way leveectl reads YAML) or YAML, read the way kubectl reads it."""
    with open(path) as f:
        if path.endswith(".json"):
            return json.load(f)
        return [json_keys(d) for d in yaml.safe_load_all(f) if d]


def object_problems(obj, schema):
    """A custom resource against its CRD schema: apiVersion, kind and
    metadata are the API server's, the rest is the schema's."""
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    return schema_problems(body, schema)


def manifests(crd_path, rendered, versions):
    schema = crd_schema(crd_path)
    failed = 0
    for obj in load_all(rendered):
        name = "%s/%s" % (obj.get("kind"), obj.get("metadata", {}).get("name"))
        if obj.get("kind") == "ResiliencePolicy":
            problems = object_problems(obj, schema)
            print("%s %s against the CRD schema%s" % (
                "ERROR" if problems else "ok", name, ": " + "; ".join(problems) if problems else ""))
            failed |= bool(problems)
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
                print("ok %s against %s (strict)" % (name, version))
            except kubernetes_validate.ValidationError as e:
                where = ".".join(str(p) for p in e.path)
                print("ERROR %s against %s: %s: %s" % (name, version, where, e.message))
                failed = 1
            except kubernetes_validate.SchemaNotFoundError as e:
                print("ERROR %s: no schema: %s" % (name, e.message))
                failed = 1
    return failed


def policies(crd_path, files):
    schema = crd_schema(crd_path)
    for path in files:
        for obj in load_all(path):
            if obj.get("kind") != "ResiliencePolicy":
                continue
            problems = object_problems(obj, schema)
            name = obj.get("metadata", {}).get("name")
            if problems:
                print("invalid %s %s: %s" % (path, name, "; ".join(problems)))
            else:
                print("ok %s %s" % (path, name))
    return 0


def node(schema, field):
    node = schema["properties"]["spec"]
    for part in field.split("."):
        item = part.endswith("[]")
        node = node["properties"][part[:-2] if item else part]
        if item:
            node = node["items"]
    return node


def rules(crd_path, rules_path):
    schema = crd_schema(crd_path)
    with open(rules_path) as f:
        table = json.load(f)
    failed = 0
    for rule in table:
        field_schema = node(schema, rule["field"])
        accept = schema_problems(yaml.safe_load(rule["accept"]), field_schema, rule["field"])
        reject = schema_problems(yaml.safe_load(rule["reject"]), field_schema, rule["field"])
        ok = not accept and reject
        failed |= not ok
        print("%s %s accept %s -> %s, reject %s -> %s" % (
            "ok" if ok else "ERROR", rule["field"], rule["accept"], accept or "passes",
            rule["reject"], reject or "passes"))
    return failed


def main(argv):
    mode = argv[1]
    if mode == "manifests":
        return manifests(argv[2], argv[3], argv[4:])
    if mode == "versions":
        minors = []
        for v in kubernetes_validate.utils.all_versions():
            minor = kubernetes_validate.utils.major_minor(v)
            if minor not in minors:
                minors.append(minor)
        print(" ".join(minors))
        return 0
    if mode == "policies":
        return policies(argv[2], argv[3:])
    if mode == "rules":
        return rules(argv[2], argv[3])
    print("unknown mode %s" % mode, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
