//! `levee-proxy init-iptables` in network namespaces this test creates (root
//! only): the real binary installs real rules; run twice, the tables are
//! identical; `--dry-run` changes nothing and prints what is installed;
//! `--clean` leaves no Levee chain; TCP is really captured, and the proxy's
//! uid, loopback, the admin port and skipped ports really bypass the capture.

use std::{net::SocketAddr, process::Output, time::Duration};

use futures_util::future::select_all;
use levee_tests::harness::{
    binary,
    netns::{B_V4, B_V6, Netns, NetnsPair},
};
use tokio::{io::AsyncBufReadExt, net::TcpListener};

/// The proxy's default uid (`--proxy-uid`).
const PROXY_UID: u32 = 2102;

async fn init_iptables(ns: &Netns, flags: &[&str]) -> Output {
    let proxy = binary("levee-proxy");
    let mut args = vec!["init-iptables"];
    args.extend(flags);
    ns.output(&proxy.to_string_lossy(), &args).await
}

async fn init_ok(ns: &Netns, flags: &[&str]) -> String {
    let out = init_iptables(ns, flags).await;
    assert!(
        out.status.success(),
        "init-iptables {flags:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every nat table of both families and both backends, as the save tools
/// print them, without their comment lines (which carry the date).
async fn snapshot(ns: &Netns) -> String {
    let mut all = String::new();
    for tool in [
        "iptables-nft-save",
        "ip6tables-nft-save",
        "iptables-legacy-save",
        "ip6tables-legacy-save",
    ] {
        all.push_str(&format!("== {tool}\n"));
        for line in ns.stdout(tool, &["-t", "nat"]).await.lines() {
            if !line.starts_with('#') {
                all.push_str(line);
                all.push('\n');
            }
        }
    }
    all
}

/// The section of `snapshot` printed by `tool`.
fn section<'a>(snapshot: &'a str, tool: &str) -> &'a str {
    let start = snapshot
        .find(&format!("== {tool}\n"))
        .unwrap_or_else(|| panic!("no {tool} in the snapshot"));
    let rest = &snapshot[start + tool.len() + 4..];
    rest.find("== ").map_or(rest, |end| &rest[..end])
}

/// Installs twice, checks the tables stay identical and hold every rule the
/// dry run printed, then cleans. `save_tool`s are the backend expected to
/// hold the rules, `other_tools` the one that must not.
async fn idempotent_then_clean(mode_flags: &[&str], save_tools: [&str; 2], other_tools: [&str; 2]) {
    let ns = Netns::create();
    let pristine = snapshot(&ns).await;

    let plan = init_ok(&ns, &[mode_flags, &["--dry-run"]].concat()).await;
    assert_eq!(
        snapshot(&ns).await,
        pristine,
        "--dry-run changed the tables"
    );
    assert!(
        plan.contains("-A LEVEE_OUTBOUND -p tcp -j REDIRECT --to-ports 4140"),
        "dry run printed:\n{plan}"
    );

    init_ok(&ns, mode_flags).await;
    let once = snapshot(&ns).await;
    init_ok(&ns, mode_flags).await;
    let twice = snapshot(&ns).await;
    assert_eq!(once, twice, "a second run changed the tables");

    // The dry run printed exactly what got installed: its chains and rules,
    // one family after the other, each family's in its own table.
    let planned: Vec<&str> = plan.split("# IPv6").collect();
    assert_eq!(planned.len(), 2, "one plan per family:\n{plan}");
    for (family_plan, tool) in planned.iter().zip(save_tools) {
        let saved = section(&once, tool);
        for line in family_plan.lines().filter(|l| l.starts_with("-A ")) {
            assert!(
                saved.contains(&format!("{line}\n")),
                "{tool} lacks {line:?}:\n{saved}"
            );
        }
        let redirects = saved.matches("-j REDIRECT").count();
        assert_eq!(redirects, 2, "{tool}:\n{saved}");
        assert_eq!(
            saved.matches("-j LEVEE_INBOUND").count(),
            1,
            "{tool}:\n{saved}"
        );
        assert_eq!(
            saved.matches("-j LEVEE_OUTBOUND").count(),
            1,
            "{tool}:\n{saved}"
        );
    }
    for tool in other_tools {
        assert!(
            !section(&once, tool).contains("LEVEE_"),
            "{tool} got rules:\n{once}"
        );
    }

    init_ok(&ns, &[mode_flags, &["--clean"]].concat()).await;
    let cleaned = snapshot(&ns).await;
    assert!(!cleaned.contains("LEVEE_"), "--clean left:\n{cleaned}");
    // Cleaning a clean table is fine and changes nothing.
    init_ok(&ns, &[mode_flags, &["--clean"]].concat()).await;
    assert_eq!(snapshot(&ns).await, cleaned);
}

#[tokio::test]
async fn nft_rules_are_idempotent_and_cleaned() {
    idempotent_then_clean(
        &[],
        ["iptables-nft-save", "ip6tables-nft-save"],
        ["iptables-legacy-save", "ip6tables-legacy-save"],
    )
    .await;
}

#[tokio::test]
async fn legacy_rules_are_idempotent_and_cleaned() {
    idempotent_then_clean(
        &["--iptables-mode", "legacy"],
        ["iptables-legacy-save", "ip6tables-legacy-save"],
        ["iptables-nft-save", "ip6tables-nft-save"],
    )
    .await;
}

#[tokio::test]
async fn missing_capabilities_are_named_and_nothing_changes() {
    let ns = Netns::create();
    let pristine = snapshot(&ns).await;
    // (flags for setpriv, backend, the capabilities the error must name)
    let cases: [(&[&str], &str, &str); 3] = [
        (
            &["--reuid=2102", "--regid=2102", "--clear-groups"],
            "nft",
            "lacks NET_ADMIN and NET_RAW",
        ),
        (
            &["--inh-caps=-net_admin", "--bounding-set=-net_admin"],
            "nft",
            "lacks NET_ADMIN\n",
        ),
        (
            &["--inh-caps=-net_raw", "--bounding-set=-net_raw"],
            "legacy",
            "lacks NET_RAW\n",
        ),
    ];
    let proxy = binary("levee-proxy").to_string_lossy().into_owned();
    for (setpriv, mode, named) in cases {
        let mut args = setpriv.to_vec();
        args.extend([proxy.as_str(), "init-iptables", "--iptables-mode", mode]);
        let out = ns.output("setpriv", &args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{setpriv:?} succeeded: {stderr}");
        assert!(
            format!("{stderr}\n").contains(named),
            "{setpriv:?}: {stderr}"
        );
    }
    assert_eq!(snapshot(&ns).await, pristine);

    // NET_ADMIN and NET_RAW are enough (as root, every other capability dropped).
    let only_these = "-all,+net_admin,+net_raw";
    for mode in ["nft", "legacy"] {
        let out = ns
            .output(
                "setpriv",
                &[
                    &format!("--inh-caps={only_these}"),
                    &format!("--bounding-set={only_these}"),
                    &proxy,
                    "init-iptables",
                    "--iptables-mode",
                    mode,
                ],
            )
            .await;
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(snapshot(&ns).await.contains("LEVEE_OUTBOUND"));
}

/// Sends a token from `from` to `target` (as `uid`) and says which of the
/// `listeners` received it.
async fn who_receives(
    from: &Netns,
    target: SocketAddr,
    uid: Option<u32>,
    listeners: &[(&'static str, &TcpListener)],
) -> &'static str {
    let token = format!("token-{}", rand::random::<u32>());
    if let Err(e) = from.send_tcp(target, uid, &token).await {
        panic!("{e}");
    }
    // The connection is established (and the token sent) before bash exits,
    // so it already waits in exactly one listener's accept queue.
    let accepts = listeners
        .iter()
        .map(|(name, listener)| Box::pin(async move { (*name, listener.accept().await) }));
    let ((name, accepted), _, _) =
        tokio::time::timeout(Duration::from_secs(5), select_all(accepts))
            .await
            .unwrap_or_else(|_| panic!("no listener got the connection to {target}"));
    let (stream, _) = accepted.expect("accept");
    let mut line = String::new();
    tokio::io::BufReader::new(stream)
        .read_line(&mut line)
        .await
        .expect("read the token");
    assert_eq!(line.trim(), token, "{name} got another connection");
    name
}

fn any(port: u16) -> SocketAddr {
    SocketAddr::from(([0u16; 8], port))
}

#[tokio::test]
async fn outbound_is_captured_except_proxy_uid_loopback_and_skipped_ports() {
    let NetnsPair { a, b } = NetnsPair::create();
    let a_outbound = a.listen(any(4140));
    let a_local = a.listen(SocketAddr::from(([127, 0, 0, 1], 9003)));
    let b_9001 = b.listen(any(9001));
    let b_9002 = b.listen(any(9002));
    let all = [
        ("a:4140", &a_outbound),
        ("a:127.0.0.1:9003", &a_local),
        ("b:9001", &b_9001),
        ("b:9002", &b_9002),
    ];
    let to = |ip, port| SocketAddr::new(ip, port);

    // Before the rules, a call reaches its destination.
    assert_eq!(who_receives(&a, to(B_V4, 9001), None, &all).await, "b:9001");

    init_ok(&a, &["--skip-outbound-ports", "9002"]).await;
    for ip in [B_V4, B_V6] {
        // Root and any other uid are captured, on both families.
        assert_eq!(who_receives(&a, to(ip, 9001), None, &all).await, "a:4140");
        assert_eq!(
            who_receives(&a, to(ip, 9001), Some(1000), &all).await,
            "a:4140"
        );
        // The proxy's own connections are not.
        assert_eq!(
            who_receives(&a, to(ip, 9001), Some(PROXY_UID), &all).await,
            "b:9001"
        );
        // Skipped ports are not.
        assert_eq!(who_receives(&a, to(ip, 9002), None, &all).await, "b:9002");
    }
    // Loopback destinations are not.
    let local = to("127.0.0.1".parse().expect("ip"), 9003);
    assert_eq!(
        who_receives(&a, local, Some(1000), &all).await,
        "a:127.0.0.1:9003"
    );
}

#[tokio::test]
async fn inbound_is_captured_except_admin_and_skipped_ports() {
    let NetnsPair { a, b } = NetnsPair::create();
    let b_inbound = b.listen(any(4143));
    let b_admin = b.listen(any(4191));
    let b_9000 = b.listen(any(9000));
    let b_9001 = b.listen(any(9001));
    let a_outbound = a.listen(any(4140));
    let all = [
        ("b:4143", &b_inbound),
        ("b:4191", &b_admin),
        ("b:9000", &b_9000),
        ("b:9001", &b_9001),
        ("a:4140", &a_outbound),
    ];
    let to = |ip, port| SocketAddr::new(ip, port);

    assert_eq!(who_receives(&a, to(B_V4, 9001), None, &all).await, "b:9001");

    init_ok(&b, &["--skip-inbound-ports", "9000"]).await;
    for ip in [B_V4, B_V6] {
        assert_eq!(who_receives(&a, to(ip, 9001), None, &all).await, "b:4143");
        assert_eq!(who_receives(&a, to(ip, 9000), None, &all).await, "b:9000");
        assert_eq!(who_receives(&a, to(ip, 4191), None, &all).await, "b:4191");
    }
}

/// A directory whose `ip6tables-nft-restore` always fails (first in PATH):
/// the IPv6 step fails after the IPv4 one was applied.
fn failing_ip6tables_restore() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let tool = dir.path().join("ip6tables-nft-restore");
    std::fs::write(
        &tool,
        "#!/bin/sh\necho 'ip6tables-nft-restore: injected failure' >&2\nexit 1\n",
    )
    .expect("write the failing tool");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

#[tokio::test]
async fn a_failed_ipv6_step_rolls_ipv4_back() {
    let ns = Netns::create();
    let failing = failing_ip6tables_restore();
    let path = format!(
        "PATH={}:/usr/sbin:/usr/bin:/sbin:/bin",
        failing.path().display()
    );
    let proxy = binary("levee-proxy").to_string_lossy().into_owned();
    let with_failing_v6 = |flags: &'static [&'static str]| {
        let mut args = vec![
            path.as_str(),
            proxy.as_str(),
            "init-iptables",
            "--iptables-mode",
            "nft",
        ];
        args.extend(flags);
        args
    };

    // A fresh install: IPv4 is applied, IPv6 fails, IPv4 is cleaned again.
    let pristine = snapshot(&ns).await;
    let out = ns.output("env", &with_failing_v6(&[])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("injected failure") && stderr.contains("rolled back"),
        "{stderr}"
    );
    assert_eq!(snapshot(&ns).await, pristine, "a failed install left rules");

    // A change of flags over installed rules: IPv4 gets its old rules back.
    init_ok(&ns, &["--iptables-mode", "nft"]).await;
    let installed = snapshot(&ns).await;
    let out = ns
        .output("env", &with_failing_v6(&["--skip-outbound-ports", "443"]))
        .await;
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        snapshot(&ns).await,
        installed,
        "a failed change left new rules"
    );
}

#[tokio::test]
async fn no_ipv6_leaves_ip6tables_alone() {
    let ns = Netns::create();
    init_ok(&ns, &["--no-ipv6", "--iptables-mode", "nft"]).await;
    let installed = snapshot(&ns).await;
    assert!(section(&installed, "iptables-nft-save").contains("-j LEVEE_OUTBOUND"));
    assert!(
        !section(&installed, "ip6tables-nft-save").contains("LEVEE_"),
        "{installed}"
    );
}
