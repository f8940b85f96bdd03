use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use http::header::HeaderValue;

use super::hops::{self, X_LEVEE_HOPS};
use super::own::{OwnListeners, reached_by};

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// Outbound on loopback only, inbound on the IPv4 wildcard, admin on the
/// IPv6 wildcard (dual stack), as a pod would bind them.
fn listeners() -> [SocketAddr; 3] {
    [
        addr("127.0.0.1:4140"),
        addr("0.0.0.0:4143"),
        addr("[::]:4191"),
    ]
}

/// Addresses of the pretend host's interfaces besides loopback.
fn on_interface(ip: IpAddr) -> bool {
    ["10.1.2.3", "fe80::1", "fd00::7"]
        .iter()
        .any(|a| a.parse::<IpAddr>().ok() == Some(ip))
}

#[test]
fn every_spelling_of_an_own_listener_is_refused() {
    let bound = listeners();
    let [outbound, inbound, admin] = bound;
    let cases = [
        // The outbound listener, bound to 127.0.0.1 only.
        ("127.0.0.1:4140", outbound),
        ("[::ffff:127.0.0.1]:4140", outbound),
        ("0.0.0.0:4140", outbound),
        ("[::]:4140", outbound),
        ("[::ffff:0.0.0.0]:4140", outbound),
        // The inbound listener, on every local address.
        ("127.0.0.1:4143", inbound),
        ("127.0.0.2:4143", inbound),
        ("127.255.255.254:4143", inbound),
        ("[::1]:4143", inbound),
        ("[::ffff:127.0.0.1]:4143", inbound),
        ("[::ffff:10.1.2.3]:4143", inbound),
        ("10.1.2.3:4143", inbound),
        ("0.0.0.0:4143", inbound),
        ("[::]:4143", inbound),
        // The admin listener on the IPv6 wildcard owns IPv4 too.
        ("127.0.0.1:4191", admin),
        ("[::1]:4191", admin),
        ("[fe80::1]:4191", admin),
        ("[fd00::7]:4191", admin),
        ("10.1.2.3:4191", admin),
    ];
    for (target, listener) in cases {
        assert_eq!(
            reached_by(&bound, addr(target), on_interface),
            Some(listener),
            "{target}"
        );
    }
}

#[test]
fn other_addresses_and_ports_are_not_refused() {
    let bound = listeners();
    for target in [
        // A loopback-only listener does not own other loopback addresses.
        "127.0.0.2:4140",
        "[::1]:4140",
        "10.1.2.3:4140",
        // A peer's inbound on the same port: the normal mesh hop.
        "10.9.9.9:4143",
        "[fd00::8]:4143",
        "[::ffff:10.9.9.9]:4143",
        "[2001:db8::1]:4191",
        // Own addresses, other ports.
        "127.0.0.1:4141",
        "127.0.0.1:80",
        "[::1]:8080",
        "0.0.0.0:1",
    ] {
        assert_eq!(
            reached_by(&bound, addr(target), on_interface),
            None,
            "{target}"
        );
    }
}

#[test]
fn no_listeners_refuse_nothing() {
    let own = OwnListeners::default();
    assert_eq!(own.reached_by(addr("127.0.0.1:4140")), None);
    assert_eq!(own.reached_by(addr("0.0.0.0:4143")), None);
}

/// The real interface reading: every address the host's interfaces carry
/// is owned by a wildcard listener, and a specific listener owns only its
/// own address.
#[test]
fn a_wildcard_listener_owns_the_hosts_real_interface_addresses() {
    let own = OwnListeners::new([addr("0.0.0.0:4143"), addr("127.0.0.1:4140")]);
    let interfaces = if_addrs::get_if_addrs().expect("getifaddrs");
    assert!(
        interfaces.iter().any(|i| i.ip().is_loopback()),
        "the host has a loopback interface: {interfaces:?}"
    );
    for interface in interfaces {
        let target = SocketAddr::new(interface.ip(), 4143);
        assert_eq!(
            own.reached_by(target),
            Some(addr("0.0.0.0:4143")),
            "{target}"
        );
        let elsewhere = SocketAddr::new(interface.ip(), 4140);
        let expected = (interface.ip() == addr("127.0.0.1:1").ip()).then(|| addr("127.0.0.1:4140"));
        assert_eq!(own.reached_by(elsewhere), expected, "{elsewhere}");
    }
}

fn with_hops(values: &[&[u8]]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for v in values {
        headers.append(
            X_LEVEE_HOPS,
            HeaderValue::from_bytes(v).expect("a header value"),
        );
    }
    headers
}

#[test]
fn each_pass_counts_one_more_hop() {
    let mut headers = HeaderMap::new();
    for expected in 1..=16u32 {
        hops::pass(&mut headers, 16).expect("within the bound");
        assert_eq!(headers[X_LEVEE_HOPS], expected.to_string().as_str());
    }
    // Arrived having passed 16 proxies: allowed, sent on as 17.
    hops::pass(&mut headers, 16).expect("16 is the bound itself");
    assert_eq!(headers[X_LEVEE_HOPS], "17");
    let err = hops::pass(&mut headers, 16).expect_err("17 > 16");
    assert!(err.contains("17"), "{err}");
    assert_eq!(
        headers[X_LEVEE_HOPS], "17",
        "a refused request is not counted on"
    );
}

#[test]
fn counts_past_the_static_table_are_written_too() {
    let mut headers = HeaderMap::new();
    for expected in 1..=40u32 {
        hops::pass(&mut headers, 64).expect("within the bound");
        assert_eq!(headers[X_LEVEE_HOPS], expected.to_string().as_str());
        assert_eq!(headers.get_all(X_LEVEE_HOPS).iter().count(), 1);
    }
}

#[test]
fn a_hop_count_that_cannot_be_trusted_is_over_the_bound() {
    let refused: [&[&[u8]]; 13] = [
        &[b"abc"],
        &[b""],
        &[b"-1"],
        &[b"+1"],
        &[b" 1"],
        &[b"1 "],
        &[b"0x10"],
        &[b"1.5"],
        &[b"4294967296"],
        &[b"99999999999999999999999999999999999999999999"],
        &[b"\xff\xfe"],
        &[b"1", b"1"],
        &[b"0", b"junk"],
    ];
    for values in refused {
        let mut headers = with_hops(values);
        assert!(
            hops::pass(&mut headers, u32::MAX).is_err(),
            "{values:?} was trusted"
        );
    }
    // The largest count there is: refused under any bound below it, and
    // counting on from it cannot overflow.
    let mut headers = with_hops(&[b"4294967295"]);
    assert!(hops::pass(&mut headers, 16).is_err());
    hops::pass(&mut headers, u32::MAX).expect("at the bound");
    assert_eq!(headers[X_LEVEE_HOPS], "4294967295");
    let mut headers = with_hops(&[b"007"]);
    hops::pass(&mut headers, 16).expect("leading zeros are digits");
    assert_eq!(headers[X_LEVEE_HOPS], "8");
}
