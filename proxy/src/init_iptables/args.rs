//! Flags of `levee-proxy init-iptables` (docs/kubernetes.md). Each also reads
//! `LEVEE_<FLAG>` from the environment, like the proxy's own flags.

use std::fmt;
use std::str::FromStr;

use clap::{Args, ValueEnum};

/// Installs (or with --clean removes) the NAT rules that send a pod's TCP
/// traffic through its sidecar. Run once, in the pod's network namespace,
/// as an init container with NET_ADMIN and NET_RAW.
#[derive(Args, Clone, Debug)]
pub struct InitIptablesArgs {
    /// TCP arriving for the pod (PREROUTING) is redirected to this port: the proxy's inbound listener.
    #[arg(long, env = "LEVEE_INBOUND_PORT", default_value_t = 4143)]
    pub inbound_port: u16,

    /// TCP the pod opens (OUTPUT) is redirected to this port: the proxy's outbound listener.
    #[arg(long, env = "LEVEE_OUTBOUND_PORT", default_value_t = 4140)]
    pub outbound_port: u16,

    /// The proxy's admin port: never redirected inbound (probes and scrapes reach it directly).
    #[arg(long, env = "LEVEE_ADMIN_PORT", default_value_t = 4191)]
    pub admin_port: u16,

    /// The uid the proxy runs as: its own connections are never redirected (no loops).
    #[arg(long, env = "LEVEE_PROXY_UID", default_value_t = 2102)]
    pub proxy_uid: u32,

    /// Inbound destination ports that bypass the proxy, e.g. `9000,9100-9199`
    /// (the admin port always does).
    #[arg(long, env = "LEVEE_SKIP_INBOUND_PORTS", value_delimiter = ',')]
    pub skip_inbound_ports: Vec<PortRange>,

    /// Outbound destination ports that bypass the proxy, e.g. `443,5432`.
    #[arg(long, env = "LEVEE_SKIP_OUTBOUND_PORTS", value_delimiter = ',')]
    pub skip_outbound_ports: Vec<PortRange>,

    /// Leave IPv6 alone (for pods whose kernel has no IPv6); by default both
    /// iptables and ip6tables get the rules.
    #[arg(long, env = "LEVEE_NO_IPV6")]
    pub no_ipv6: bool,

    /// Which iptables backend to use; `auto` picks the one already holding
    /// rules, else nf_tables, else legacy.
    #[arg(long, env = "LEVEE_IPTABLES_MODE", value_enum, default_value_t = ModeChoice::Auto)]
    pub iptables_mode: ModeChoice,

    /// Print the exact rules (iptables-restore input) and change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Remove every LEVEE_ chain and every jump to one, instead of installing.
    #[arg(long)]
    pub clean: bool,
}

/// `--iptables-mode`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeChoice {
    Auto,
    Nft,
    Legacy,
}

/// One port or an inclusive range `first-last`, as the skip flags take them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub const fn single(port: u16) -> PortRange {
        PortRange {
            first: port,
            last: port,
        }
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(text: &str) -> Result<PortRange, String> {
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("{p:?} is not a port (1-65535)"))
        };
        let range = match text.split_once('-') {
            Some((first, last)) => PortRange {
                first: port(first)?,
                last: port(last)?,
            },
            None => PortRange::single(port(text)?),
        };
        if range.first > range.last {
            return Err(format!("{text:?}: the range ends before it starts"));
        }
        Ok(range)
    }
}

/// iptables' own notation: `443` or `9100:9199`.
impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}:{}", self.first, self.last)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_ranges_parse() {
        assert_eq!("443".parse(), Ok(PortRange::single(443)));
        assert_eq!(
            "9100-9199".parse(),
            Ok(PortRange {
                first: 9100,
                last: 9199
            })
        );
        assert_eq!(
            "9100-9199".parse::<PortRange>().map(|r| r.to_string()),
            Ok("9100:9199".to_owned())
        );
        for bad in ["0", "65536", "x", "9-1", "1-", ""] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad:?} parsed");
        }
    }
}
