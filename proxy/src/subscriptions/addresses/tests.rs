use super::*;

fn key(name: &str) -> ServiceKey {
    ServiceKey {
        name: name.into(),
        namespace: "shop".into(),
        port: 8080,
    }
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 96, 0, n], 8080))
}

#[test]
fn an_answer_is_found_without_asking_again() {
    let book = AddressBook::default();
    let (tx, mut rx) = mpsc::unbounded_channel();
    assert!(matches!(book.lookup(&addr(1)), Lookup::Missing));
    let pending = book.insert(addr(1), &tx);
    assert_eq!(rx.try_recv(), Ok(Change::SubscribeAddress(addr(1))));
    assert!(matches!(book.lookup(&addr(1)), Lookup::Pending(_)));
    // Inserting again subscribes nothing more.
    let again = book.insert(addr(1), &tx);
    assert!(Arc::ptr_eq(&pending, &again));
    assert!(rx.try_recv().is_err());

    book.answer(&addr(1), Some(key("payments")));
    assert!(pending.is_answered());
    match book.lookup(&addr(1)) {
        Lookup::Answered(Some(owner)) => assert_eq!(*owner, key("payments")),
        _ => panic!("expected the owner"),
    }
    // The answer changes (a virtual IP moved away): unknown now.
    book.answer(&addr(1), None);
    assert!(matches!(book.lookup(&addr(1)), Lookup::Answered(None)));
    // An answer for an address the book does not hold is ignored.
    book.answer(&addr(2), Some(key("orders")));
    assert!(matches!(book.lookup(&addr(2)), Lookup::Missing));
}

#[test]
fn a_full_book_drops_the_least_recently_used_and_unsubscribes_them() {
    let book = AddressBook::default();
    let evictions = Counter::default();
    book.limit(8, evictions.clone());
    let (tx, mut rx) = mpsc::unbounded_channel();
    for n in 1..=8 {
        book.insert(addr(n), &tx);
    }
    // Every address but 2 is used after it: 2 is the least recently used.
    let waiting = match book.lookup(&addr(2)) {
        Lookup::Pending(p) => p,
        _ => panic!("pending"),
    };
    let _ = book.lookup(&addr(1));
    for n in 3..=8 {
        let _ = book.lookup(&addr(n));
    }
    while rx.try_recv().is_ok() {}
    book.insert(addr(9), &tx);
    assert_eq!(book.len(), 8);
    assert_eq!(evictions.get(), 1);
    assert_eq!(rx.try_recv(), Ok(Change::UnsubscribeAddress(addr(2))));
    assert_eq!(rx.try_recv(), Ok(Change::SubscribeAddress(addr(9))));
    assert!(matches!(book.lookup(&addr(2)), Lookup::Missing));
    assert!(!matches!(book.lookup(&addr(1)), Lookup::Missing));
    // A connection waiting on a dropped address stops waiting.
    tokio_test_block_on(waiting.answered());
}

/// Runs a future that must be ready at once.
fn tokio_test_block_on(f: impl std::future::Future<Output = ()>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(1), f)
            .await
            .expect("ready at once");
    });
}
