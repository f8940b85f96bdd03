use super::*;

fn key(name: &str) -> DocKey {
    DocKey::new("ResiliencePolicy", "shop", name)
}

#[test]
fn apply_bumps_revision_and_reports_actions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = PolicyStore::open(dir.path()).expect("open");
    assert_eq!(store.revision().expect("rev"), 0);

    let out = store.apply(
        &[(key("a"), "a: 1\n".into()), (key("b"), "b: 1\n".into())],
        None,
    );
    let out = out.expect("apply");
    assert_eq!(out.revision, 1);
    assert_eq!(out.actions, vec![Action::Created, Action::Created]);

    let out = store
        .apply(
            &[(key("a"), "a: 2\n".into()), (key("b"), "b: 1\n".into())],
            None,
        )
        .expect("apply");
    assert_eq!(out.revision, 2);
    assert_eq!(out.actions, vec![Action::Configured, Action::Unchanged]);
    assert_eq!(
        store.get(&key("a")).expect("get").map(|r| r.revision),
        Some(2)
    );
    assert_eq!(
        store.get(&key("b")).expect("get").map(|r| r.revision),
        Some(1)
    );

    // Nothing changed: same revision, nothing written.
    let out = store
        .apply(&[(key("a"), "a: 2\n".into())], None)
        .expect("apply");
    assert_eq!(out.revision, 2);
    assert_eq!(out.actions, vec![Action::Unchanged]);
}

#[test]
fn compare_and_set_rejects_a_stale_revision_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = PolicyStore::open(dir.path()).expect("open");
    store
        .apply(&[(key("a"), "a: 1\n".into())], Some(0))
        .expect("first CAS");
    let err = store
        .apply(&[(key("b"), "b: 1\n".into())], Some(0))
        .expect_err("stale");
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                expected: 0,
                current: 1
            }
        ),
        "{err}"
    );
    assert_eq!(store.get(&key("b")).expect("get"), None);
    assert_eq!(store.revision().expect("rev"), 1);
    let err = store.delete(&key("a"), Some(7)).expect_err("stale delete");
    assert!(matches!(err, StoreError::Conflict { .. }));
    assert!(store.get(&key("a")).expect("get").is_some());
}

#[test]
fn delete_removes_and_bumps_and_missing_is_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = PolicyStore::open(dir.path()).expect("open");
    store
        .apply(&[(key("a"), "a: 1\n".into())], None)
        .expect("apply");
    assert_eq!(store.delete(&key("a"), Some(1)).expect("delete"), 2);
    assert_eq!(store.get(&key("a")).expect("get"), None);
    let err = store.delete(&key("a"), None).expect_err("gone");
    assert!(matches!(err, StoreError::NotFound(_)));
    assert_eq!(store.revision().expect("rev"), 2);
}

#[test]
fn reopen_keeps_documents_and_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = PolicyStore::open(dir.path()).expect("open");
        store
            .apply(&[(key("a"), "a: 1\n".into())], None)
            .expect("apply");
        store
            .apply(&[(key("b"), "b: 1\n".into())], None)
            .expect("apply");
    }
    let store = PolicyStore::open(dir.path()).expect("reopen");
    let (revision, docs) = store.list().expect("list");
    assert_eq!(revision, 2);
    let names: Vec<_> = docs
        .iter()
        .map(|(k, r)| (k.name.as_str(), r.revision))
        .collect();
    assert_eq!(names, vec![("a", 1), ("b", 2)]);
}

#[test]
fn keys_round_trip_through_text() {
    let k = DocKey::new("ServiceEndpoints", "", "payments");
    assert_eq!(k.namespace, "default");
    assert_eq!(DocKey::parse(&k.to_string()), Some(k));
    assert_eq!(DocKey::parse("nope"), None);
}
