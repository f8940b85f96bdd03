//! `levee-proxy init-iptables`: the init container's job. Installs, in the
//! pod's network namespace, the NAT rules that send the pod's TCP through
//! its sidecar (inbound → 4143, outbound → 4140), for IPv4 and IPv6, on the
//! nf_tables or legacy iptables backend; or removes them (`--clean`); or
//! only prints them (`--dry-run`). docs/kubernetes.md explains the rules.
//!
//! Layout:
//! - `args`: the flags.
//! - `plan`: the rules, and the restore scripts that install or remove
//!   them over the current table (pure, unit-tested).
//! - `tables`: finding and running `iptables-save`/`iptables-restore`.
//! - `error`: failures, and which capability a refused call lacked.
//!
//! Each family's change is one `iptables-restore --noflush` transaction; if
//! IPv6 fails after IPv4 was applied, IPv4 is put back as it was, so a
//! failure never leaves half the rules installed.

mod args;
mod error;
mod plan;
mod tables;

pub use args::{InitIptablesArgs, ModeChoice, PortRange};
pub use error::{Capability, InitError};
pub use plan::{CHAIN_PREFIX, INBOUND_CHAIN, OUTBOUND_CHAIN};

use plan::{NatTable, RuleSet, clean_script, install_script};
use tables::{Family, Mode, Tables};

/// One family's planned change.
struct Step {
    tables: Tables,
    /// `iptables-save -t nat` before the change, for the rollback.
    before: String,
    /// The restore input; `None` when there is nothing to do (`--clean` of a clean table).
    script: Option<String>,
}

/// Runs `init-iptables`: plans, then prints (`--dry-run`) or applies.
/// Progress goes to stderr, a dry run's rules to stdout.
pub fn run(args: &InitIptablesArgs) -> Result<(), InitError> {
    let families: &[Family] = if args.no_ipv6 {
        &[Family::V4]
    } else {
        &[Family::V4, Family::V6]
    };
    if args.dry_run {
        dry_run(args, families);
        return Ok(());
    }
    let mode = choose_mode(args.iptables_mode)?;
    let mut steps = Vec::new();
    for &family in families {
        let tables = Tables::find(mode, family)?;
        let before = tables.save_nat()?;
        let script = plan(args, &NatTable::parse(&before));
        steps.push(Step {
            tables,
            before,
            script,
        });
    }
    apply(&steps)?;
    for step in &steps {
        let what = match (&step.script, args.clean) {
            (None, _) => "no Levee rules to remove".to_owned(),
            (Some(_), true) => format!("removed every {CHAIN_PREFIX} chain and jump"),
            (Some(_), false) => format!("installed {INBOUND_CHAIN} and {OUTBOUND_CHAIN}"),
        };
        eprintln!(
            "levee-proxy init-iptables: {}: {what}",
            step.tables.describe()
        );
    }
    Ok(())
}

fn plan(args: &InitIptablesArgs, current: &NatTable) -> Option<String> {
    if args.clean {
        clean_script(current)
    } else {
        Some(install_script(&RuleSet::from_args(args), current))
    }
}

/// Applies each step in order; on a failure, puts the steps already
/// applied back as they were.
fn apply(steps: &[Step]) -> Result<(), InitError> {
    for (done, step) in steps.iter().enumerate() {
        let Some(script) = &step.script else { continue };
        if let Err(cause) = step.tables.restore(script, true) {
            if done == 0 {
                return Err(cause);
            }
            let rollback = steps[..done].iter().rev().find_map(|s| undo(s).err());
            return Err(InitError::RolledBack {
                cause: Box::new(cause),
                rollback: rollback.map(Box::new),
            });
        }
    }
    Ok(())
}

/// Puts one applied step's nat table back: the saved table whole if it
/// held Levee rules, else just Levee's rules removed.
fn undo(step: &Step) -> Result<(), InitError> {
    if step.script.is_none() {
        return Ok(());
    }
    if NatTable::parse(&step.before).has_levee_rules() {
        return step.tables.restore(&step.before, false);
    }
    let now = NatTable::parse(&step.tables.save_nat()?);
    match clean_script(&now) {
        Some(script) => step.tables.restore(&script, true),
        None => Ok(()),
    }
}

/// `--iptables-mode auto`: the backend already holding Levee's rules, else
/// the one holding more nat rules, else nf_tables; legacy when nf_tables
/// cannot be used (tools or kernel support missing).
fn choose_mode(choice: ModeChoice) -> Result<Mode, InitError> {
    let candidates = match choice {
        ModeChoice::Nft => return Ok(Mode::Nft),
        ModeChoice::Legacy => return Ok(Mode::Legacy),
        ModeChoice::Auto => [Mode::Nft, Mode::Legacy],
    };
    let mut usable: Vec<(Mode, NatTable)> = Vec::new();
    let mut refused = None;
    let mut reasons = Vec::new();
    for mode in candidates {
        match Tables::find(mode, Family::V4).and_then(|t| t.save_nat()) {
            Ok(save) => usable.push((mode, NatTable::parse(&save))),
            Err(error @ InitError::NotPermitted { .. }) => {
                refused.get_or_insert(error);
            }
            Err(error) => reasons.push(error.to_string()),
        }
    }
    if let Some((mode, _)) = usable.iter().find(|(_, t)| t.has_levee_rules()) {
        return Ok(*mode);
    }
    // max_by_key keeps the last of equals: reversed, nf_tables wins ties.
    if let Some((mode, _)) = usable.iter().rev().max_by_key(|(_, t)| t.rules.len()) {
        return Ok(*mode);
    }
    Err(refused.unwrap_or_else(|| InitError::NoBackend(reasons.join("; "))))
}

/// Prints each family's restore input, changing nothing. The current rules
/// are read when possible (so the delta is exact); when they cannot be
/// (no privilege, no iptables here) the plan is for an empty table.
fn dry_run(args: &InitIptablesArgs, families: &[Family]) {
    let mode = match choose_mode(args.iptables_mode) {
        Ok(mode) => mode,
        Err(error) => {
            println!(
                "# cannot tell the backend ({}); assuming nf_tables",
                first_line(&error)
            );
            Mode::Nft
        }
    };
    for &family in families {
        let (label, current) = match Tables::find(mode, family) {
            Ok(tables) => (tables.describe(), tables.save_nat()),
            Err(error) => (family.label().to_owned(), Err(error)),
        };
        println!("# {label} (iptables-restore --noflush input)");
        let current = current
            .map(|s| NatTable::parse(&s))
            .unwrap_or_else(|error| {
                let why = first_line(&error);
                println!("# current rules unreadable ({why}): planned for an empty nat table");
                NatTable::default()
            });
        match plan(args, &current) {
            Some(script) => print!("{script}"),
            None => println!("# no Levee rules to remove"),
        }
    }
}

fn first_line(error: &InitError) -> String {
    error
        .to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}
