//! Rule planning, pure: what Levee's NAT rules are for a set of flags, and
//! the `iptables-restore --noflush` input that takes a nat table from what
//! `iptables-save -t nat` showed to exactly those rules (or, for `--clean`,
//! to none of them). One script per address family, applied in one
//! transaction, so a failure leaves the table as it was.
//!
//! Rules are written the way `iptables-save` prints them (`-m tcp`, the
//! owner match's spelling), so `--dry-run` shows what `iptables-save` will.

use super::args::{InitIptablesArgs, PortRange};

/// Every chain Levee owns starts with this; `--clean` removes all of them.
pub const CHAIN_PREFIX: &str = "LEVEE_";
/// Inbound: jumped to from PREROUTING.
pub const INBOUND_CHAIN: &str = "LEVEE_INBOUND";
/// Outbound: jumped to from OUTPUT.
pub const OUTBOUND_CHAIN: &str = "LEVEE_OUTBOUND";

/// The rules Levee wants, independent of the address family: `-o lo`
/// covers 127.0.0.0/8 and ::1 alike (and the pod's own addresses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSet {
    /// Levee chains in creation order, each with its rule specs (after `-A CHAIN`).
    pub chains: Vec<(&'static str, Vec<String>)>,
    /// Jumps from built-in chains: (built-in chain, rule spec).
    pub jumps: Vec<(&'static str, String)>,
}

impl RuleSet {
    pub fn from_args(args: &InitIptablesArgs) -> RuleSet {
        let skip = |ports: &mut Vec<PortRange>| {
            ports.sort();
            ports.dedup();
            ports
                .iter()
                .map(|p| format!("-p tcp -m tcp --dport {p} -j RETURN"))
                .collect::<Vec<_>>()
        };

        let mut inbound_skips = vec![PortRange::single(args.admin_port)];
        inbound_skips.extend(&args.skip_inbound_ports);
        let mut inbound = skip(&mut inbound_skips);
        inbound.push(format!(
            "-p tcp -j REDIRECT --to-ports {}",
            args.inbound_port
        ));

        // Order matters: the proxy's own connections first (its upstream
        // calls must never come back to it), then local destinations, then
        // the skipped ports; everything else goes to the outbound listener.
        let mut outbound = vec![
            format!("-m owner --uid-owner {} -j RETURN", args.proxy_uid),
            "-o lo -j RETURN".to_owned(),
        ];
        outbound.extend(skip(&mut args.skip_outbound_ports.clone()));
        outbound.push(format!(
            "-p tcp -j REDIRECT --to-ports {}",
            args.outbound_port
        ));

        RuleSet {
            chains: vec![(INBOUND_CHAIN, inbound), (OUTBOUND_CHAIN, outbound)],
            jumps: vec![
                ("PREROUTING", format!("-p tcp -j {INBOUND_CHAIN}")),
                ("OUTPUT", format!("-p tcp -j {OUTBOUND_CHAIN}")),
            ],
        }
    }
}

/// The nat table as `iptables-save -t nat` printed it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatTable {
    /// Every chain declared (`:NAME POLICY [counters]`), built-in or not.
    pub chains: Vec<String>,
    /// Every rule: (chain, spec after `-A CHAIN `).
    pub rules: Vec<(String, String)>,
}

impl NatTable {
    /// Reads the `*nat` section of `iptables-save` output; other tables,
    /// comments and counters are ignored. Empty output is an empty table.
    pub fn parse(save: &str) -> NatTable {
        let mut table = NatTable::default();
        let mut in_nat = false;
        for line in save.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('*') {
                in_nat = name == "nat";
            } else if line == "COMMIT" {
                in_nat = false;
            } else if !in_nat {
                continue;
            } else if let Some(decl) = line.strip_prefix(':') {
                if let Some(name) = decl.split_whitespace().next() {
                    table.chains.push(name.to_owned());
                }
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
                table.rules.push((chain.to_owned(), spec.to_owned()));
            }
        }
        table
    }

    /// Levee's chains present in the table.
    pub fn levee_chains(&self) -> impl Iterator<Item = &str> {
        self.chains
            .iter()
            .map(String::as_str)
            .filter(|c| c.starts_with(CHAIN_PREFIX))
    }

    /// Rules outside Levee's chains that jump to one of them.
    fn levee_jumps(&self) -> impl Iterator<Item = &(String, String)> {
        self.rules.iter().filter(|(chain, spec)| {
            !chain.starts_with(CHAIN_PREFIX) && jump_target(spec).is_some_and(is_levee)
        })
    }

    /// Whether any Levee chain or jump is installed.
    pub fn has_levee_rules(&self) -> bool {
        self.levee_chains().next().is_some() || self.levee_jumps().next().is_some()
    }
}

fn is_levee(chain: &str) -> bool {
    chain.starts_with(CHAIN_PREFIX)
}

fn jump_target(spec: &str) -> Option<&str> {
    let mut words = spec.split_whitespace();
    while let Some(word) = words.next() {
        if word == "-j" || word == "--jump" || word == "-g" || word == "--goto" {
            return words.next();
        }
    }
    None
}

/// The restore input that installs `wanted` over `current`. Declaring a
/// chain flushes it when it exists (`--noflush` spares only the others), so
/// Levee's chains are rewritten whole; jumps already in place are kept,
/// missing ones appended, duplicates and stale ones deleted. Running it on
/// its own result changes nothing.
pub fn install_script(wanted: &RuleSet, current: &NatTable) -> String {
    let wanted_chains: Vec<&str> = wanted.chains.iter().map(|(c, _)| *c).collect();
    let stale_chains: Vec<&str> = current
        .levee_chains()
        .filter(|c| !wanted_chains.contains(c))
        .collect();

    let mut out = String::from("*nat\n");
    for chain in wanted_chains.iter().chain(&stale_chains) {
        out.push_str(&format!(":{chain} - [0:0]\n"));
    }
    let mut kept: Vec<&(&str, String)> = Vec::new();
    for (chain, spec) in current.levee_jumps() {
        match wanted
            .jumps
            .iter()
            .find(|(c, s)| c == chain && s == spec && !kept.iter().any(|k| k.0 == *c && k.1 == *s))
        {
            Some(jump) => kept.push(jump),
            None => out.push_str(&format!("-D {chain} {spec}\n")),
        }
    }
    for chain in &stale_chains {
        out.push_str(&format!("-X {chain}\n"));
    }
    for (chain, specs) in &wanted.chains {
        for spec in specs {
            out.push_str(&format!("-A {chain} {spec}\n"));
        }
    }
    for jump in &wanted.jumps {
        if !kept.contains(&jump) {
            out.push_str(&format!("-A {} {}\n", jump.0, jump.1));
        }
    }
    out.push_str("COMMIT\n");
    out
}

/// The restore input that removes every Levee chain and every jump to one;
/// `None` when there is nothing to remove.
pub fn clean_script(current: &NatTable) -> Option<String> {
    if !current.has_levee_rules() {
        return None;
    }
    let mut out = String::from("*nat\n");
    // Declared first so they are flushed: a chain that still holds rules,
    // or is still jumped to, cannot be deleted.
    for chain in current.levee_chains() {
        out.push_str(&format!(":{chain} - [0:0]\n"));
    }
    for (chain, spec) in current.levee_jumps() {
        out.push_str(&format!("-D {chain} {spec}\n"));
    }
    for chain in current.levee_chains() {
        out.push_str(&format!("-X {chain}\n"));
    }
    out.push_str("COMMIT\n");
    Some(out)
}

#[cfg(test)]
mod tests;
