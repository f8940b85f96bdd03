use std::time::Duration;

use clap::Parser;

use super::{AccessLogFormat, AdminTopology, Cli, Command, LogFormat, ProxyConfig};
use crate::h2_settings::H2Settings;

fn cli(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("levee-proxy").chain(args.iter().copied()))
}

#[test]
fn without_a_subcommand_the_flags_run_the_proxy() {
    let c = cli(&["--app-port", "9090"]).expect("parse");
    assert!(c.command.is_none());
    assert_eq!(c.proxy.app_port, 9090);
}

#[test]
fn init_iptables_is_a_subcommand_with_its_own_flags() {
    let c = cli(&["init-iptables", "--proxy-uid", "7", "--dry-run"]).expect("parse");
    let Some(Command::InitIptables(args)) = c.command else {
        panic!("no subcommand parsed");
    };
    assert_eq!(args.proxy_uid, 7);
    assert!(args.dry_run);
    assert_eq!(args.inbound_port, 4143);
    assert_eq!(args.outbound_port, 4140);
    // Proxy flags do not mix with a subcommand.
    assert!(cli(&["--app-port", "9090", "init-iptables"]).is_err());
}

#[test]
fn defaults_match_design() {
    let c = ProxyConfig::from_args(Vec::<String>::new()).expect("defaults parse");
    assert_eq!(c.outbound_addr, "127.0.0.1:4140".parse().expect("addr"));
    assert_eq!(c.inbound_addr, "0.0.0.0:4143".parse().expect("addr"));
    assert_eq!(c.admin_addr, "0.0.0.0:4191".parse().expect("addr"));
    assert_eq!(c.app_port, 8080);
    assert_eq!(c.namespace, "default");
    assert_eq!(c.max_header_bytes, 65536);
    assert_eq!(c.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.idle_timeout, Duration::from_secs(300));
    assert_eq!(c.shutdown_grace, Duration::from_secs(10));
    assert_eq!(c.connect_timeout, Duration::from_secs(1));
    assert_eq!(c.detect_timeout, crate::transparent::DEFAULT_DETECT_TIMEOUT);
    assert_eq!(c.opaque_ports, crate::transparent::DEFAULT_OPAQUE_PORTS);
    assert_eq!(c.max_hops, 16);
    assert_eq!(c.admin_topology, AdminTopology::Loopback);
    assert_eq!(c.admin_max_connections, 64);
    assert_eq!(c.max_destinations, 4096);
    assert_eq!(c.max_rate_limit_clients, 65_536);
    assert_eq!(c.tunnel_idle_timeout, Duration::from_secs(300));
    assert_eq!(c.allowed_upgrades, ["websocket"]);
    assert_eq!(c.default_request_timeout, Duration::from_secs(15));
    assert_eq!(c.default_stream_idle_timeout, Duration::from_secs(300));
    let c = ProxyConfig::from_args(["--allowed-upgrades", "websocket,foo"]).expect("parse");
    assert_eq!(c.allowed_upgrades, ["websocket", "foo"]);
    assert_eq!(c.h2_settings(), H2Settings::default());
}

#[test]
fn max_hops_is_bounded() {
    let c = ProxyConfig::from_args(["--max-hops", "4"]).expect("parse");
    assert_eq!(c.max_hops, 4);
    for bad in ["0", "256", "-1", "many"] {
        assert!(
            ProxyConfig::from_args(["--max-hops", bad]).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn h2_windows_are_bounded_to_what_http2_allows() {
    let c = ProxyConfig::from_args([
        "--h2-max-concurrent-streams",
        "250",
        "--h2-stream-window",
        "65535",
        "--h2-connection-window",
        "2147483647",
    ])
    .expect("parse");
    assert_eq!(c.h2_settings().max_concurrent_streams, 250);
    assert_eq!(c.h2_settings().stream_window, 65_535);
    assert_eq!(c.h2_settings().connection_window, 2_147_483_647);
    for bad in [
        ["--h2-stream-window", "65534"],
        ["--h2-connection-window", "2147483648"],
        ["--h2-max-concurrent-streams", "0"],
    ] {
        assert!(ProxyConfig::from_args(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn durations_and_enums_parse() {
    let c = ProxyConfig::from_args([
        "--header-read-timeout",
        "250ms",
        "--log-format",
        "json",
        "--access-log",
        "json",
    ])
    .expect("parse");
    assert_eq!(c.header_read_timeout, Duration::from_millis(250));
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.access_log, Some(AccessLogFormat::Json));
    assert!(ProxyConfig::from_args(["--idle-timeout", "5"]).is_err());
}
