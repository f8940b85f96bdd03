//! What can go wrong in `init-iptables`, and the capability diagnosis: a
//! refused iptables call is reported with the capabilities this process
//! lacks (read from `/proc/self/status`), not as a bare "Permission denied".

use std::fmt;

/// Why `init-iptables` failed. Every variant leaves the tables as they were.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(
        "{tool} not found (looked in PATH, /usr/sbin and /sbin): install iptables in the image"
    )]
    ToolMissing { tool: String },

    #[error("running {tool}: {source}")]
    Spawn {
        tool: String,
        source: std::io::Error,
    },

    #[error("{tool} was refused: {detail}\n{}", advice(.missing))]
    NotPermitted {
        tool: String,
        detail: String,
        /// The capabilities this process lacks (empty: it has both).
        missing: Vec<Capability>,
    },

    #[error("{tool} failed ({status}): {detail}")]
    ToolFailed {
        tool: String,
        status: String,
        detail: String,
    },

    #[error("no usable iptables backend: {0}")]
    NoBackend(String),

    /// A later family failed after an earlier one was applied; the earlier
    /// ones were put back as they were (or `rollback` says why not).
    #[error("{cause}\n{}", match .rollback {
        None => "the rules applied before it were rolled back: nothing changed".to_owned(),
        Some(e) => format!("rolling back the rules applied before it failed too: {e}"),
    })]
    RolledBack {
        cause: Box<InitError>,
        rollback: Option<Box<InitError>>,
    },
}

/// A Linux capability `init-iptables` needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    /// Changing netfilter rules (nf_tables netlink and the legacy setsockopt).
    NetAdmin,
    /// The legacy backend talks to the kernel through a raw socket.
    NetRaw,
}

impl Capability {
    const ALL: [Capability; 2] = [Capability::NetAdmin, Capability::NetRaw];

    /// The bit number in the kernel's capability sets (linux/capability.h).
    fn bit(self) -> u32 {
        match self {
            Capability::NetAdmin => 12,
            Capability::NetRaw => 13,
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Capability::NetAdmin => "NET_ADMIN",
            Capability::NetRaw => "NET_RAW",
        })
    }
}

/// Whether a tool's complaint means the kernel refused it for lack of privilege.
pub fn is_permission_error(stderr: &str) -> bool {
    [
        "Permission denied",
        "Operation not permitted",
        "you must be root",
    ]
    .iter()
    .any(|p| stderr.contains(p))
}

/// The needed capabilities missing from the effective set in `status`
/// (the text of `/proc/self/status`); all of them if it cannot be read.
pub fn missing_capabilities(status: &str) -> Vec<Capability> {
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok());
    Capability::ALL
        .into_iter()
        .filter(|c| effective.is_none_or(|set| set & (1 << c.bit()) == 0))
        .collect()
}

/// This process's missing capabilities.
pub fn missing_capabilities_now() -> Vec<Capability> {
    missing_capabilities(&std::fs::read_to_string("/proc/self/status").unwrap_or_default())
}

fn advice(missing: &[Capability]) -> String {
    let needs = "init-iptables needs the NET_ADMIN and NET_RAW capabilities \
                 (securityContext.capabilities.add: [NET_ADMIN, NET_RAW])";
    match missing {
        [] => format!(
            "{needs}; this process has both, so something else refused: a user \
             namespace that does not own this network namespace, or a seccomp/LSM policy"
        ),
        missing => {
            let names: Vec<String> = missing.iter().map(Capability::to_string).collect();
            format!("{needs}; this process lacks {}", names.join(" and "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_read_from_the_effective_set() {
        let status = |eff: &str| format!("Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t{eff}\n");
        assert_eq!(missing_capabilities(&status("000001ffffffffff")), vec![]);
        assert_eq!(
            missing_capabilities(&status("0000000000000000")),
            vec![Capability::NetAdmin, Capability::NetRaw]
        );
        // Everything but bit 13.
        assert_eq!(
            missing_capabilities(&status("000001ffffffdfff")),
            vec![Capability::NetRaw]
        );
        assert_eq!(
            missing_capabilities("no such line"),
            vec![Capability::NetAdmin, Capability::NetRaw]
        );
    }

    #[test]
    fn refusals_name_what_is_missing() {
        assert!(is_permission_error(
            "iptables-legacy-save v1.8.9: Permission denied (you must be root)"
        ));
        assert!(!is_permission_error(
            "Could not fetch rule set generation id: Invalid argument"
        ));
        let error = InitError::NotPermitted {
            tool: "iptables-nft-restore".into(),
            detail: "Operation not permitted".into(),
            missing: vec![Capability::NetAdmin],
        };
        let text = error.to_string();
        assert!(text.contains("lacks NET_ADMIN"), "{text}");
        assert!(!text.contains("lacks NET_ADMIN and"), "{text}");
    }
}
