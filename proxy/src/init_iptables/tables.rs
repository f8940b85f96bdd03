//! The iptables tools of one backend and address family: finding
//! `iptables-nft-save`, `ip6tables-legacy-restore`, … (or the unsuffixed
//! names on systems that ship one backend), reading the nat table and
//! applying a restore script. The only place that runs external commands.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::error::{InitError, is_permission_error, missing_capabilities_now};

/// The iptables backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// iptables-nft: iptables rules stored in nf_tables.
    Nft,
    /// iptables-legacy: the x_tables kernel interface.
    Legacy,
}

impl Mode {
    fn suffix(self) -> &'static str {
        match self {
            Mode::Nft => "nft",
            Mode::Legacy => "legacy",
        }
    }
}

/// The address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn base(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// `iptables-save` and `iptables-restore` of one mode and family.
#[derive(Clone, Debug)]
pub struct Tables {
    pub family: Family,
    save: PathBuf,
    restore: PathBuf,
}

/// How long `iptables-restore` waits for the legacy xtables lock.
const LOCK_WAIT_SECS: &str = "10";

impl Tables {
    /// Finds the tools: `iptables-nft-save` first; failing that the plain
    /// `iptables-save`, if `iptables --version` says it is that backend.
    pub fn find(mode: Mode, family: Family) -> Result<Tables, InitError> {
        let base = family.base();
        let suffixed = |kind: &str| find_on_path(&format!("{base}-{}-{kind}", mode.suffix()));
        if let (Some(save), Some(restore)) = (suffixed("save"), suffixed("restore")) {
            return Ok(Tables {
                family,
                save,
                restore,
            });
        }
        let missing = || InitError::ToolMissing {
            tool: format!("{base}-{}-restore", mode.suffix()),
        };
        let plain = find_on_path(base).ok_or_else(missing)?;
        let version = run(&plain, &["--version"], None)?;
        let is_nft = version.contains("nf_tables");
        if is_nft != (mode == Mode::Nft) {
            return Err(missing());
        }
        let save = find_on_path(&format!("{base}-save")).ok_or_else(missing)?;
        let restore = find_on_path(&format!("{base}-restore")).ok_or_else(missing)?;
        Ok(Tables {
            family,
            save,
            restore,
        })
    }

    /// E.g. `IPv4 via iptables-nft-restore`.
    pub fn describe(&self) -> String {
        format!("{} via {}", self.family.label(), file_name(&self.restore))
    }

    /// The nat table as `iptables-save -t nat` prints it.
    pub fn save_nat(&self) -> Result<String, InitError> {
        run(&self.save, &["-t", "nat"], None)
    }

    /// Applies `script` in one transaction: with `noflush`, only the chains
    /// it declares are flushed; without, every table it names is replaced.
    pub fn restore(&self, script: &str, noflush: bool) -> Result<(), InitError> {
        let mut args = vec!["--wait", LOCK_WAIT_SECS];
        if noflush {
            args.push("--noflush");
        }
        run(&self.restore, &args, Some(script)).map(drop)
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// `name` in PATH, then in /usr/sbin and /sbin (an init container's PATH
/// may lack the sbin directories).
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Runs `tool` with `stdin` fed and closed; its stdout on success. A
/// refusal for lack of privilege names the missing capabilities.
fn run(tool: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, InitError> {
    let name = file_name(tool);
    let spawn_error = |source| InitError::Spawn {
        tool: name.clone(),
        source,
    };
    let mut child = Command::new(tool)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // Dropping the pipe closes it: iptables-restore then reads EOF. A
        // tool that quit early closed its end; its exit status says why.
        if let Err(error) = pipe.write_all(input.as_bytes())
            && error.kind() != std::io::ErrorKind::BrokenPipe
        {
            return Err(spawn_error(error));
        }
    }
    let output = child.wait_with_output().map_err(spawn_error)?;
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    if is_permission_error(&stderr) {
        return Err(InitError::NotPermitted {
            tool: name,
            detail: stderr,
            missing: missing_capabilities_now(),
        });
    }
    Err(InitError::ToolFailed {
        tool: name,
        status: output.status.to_string(),
        detail: stderr,
    })
}
