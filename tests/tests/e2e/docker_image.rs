//! `deploy/docker/Dockerfile` copies exactly the binaries its build stage
//! builds, and those are the workspace's shipped binaries (cargo metadata);
//! the image's default user is the uid `init-iptables` exempts. There is no
//! Docker engine here: this reads the Dockerfile as Docker would (line
//! continuations, stages); hadolint lints it in .ci/run.

use std::{collections::BTreeSet, path::PathBuf, process::Command};

use levee_tests::harness::binary;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The Dockerfile's instructions: (keyword, arguments), continuations
/// joined, comments and blank lines dropped.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let joined = std::mem::take(&mut current);
                let (keyword, args) = joined.split_once(' ').unwrap_or((&joined, ""));
                out.push((keyword.to_uppercase(), args.trim().to_owned()));
            }
        }
    }
    out
}

/// The binaries the workspace's shipped packages define (`cargo metadata`).
fn shipped_binaries() -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(repo_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let mut bins = BTreeSet::new();
    for package in meta["packages"].as_array().expect("packages") {
        // levee-tests' binaries (bench, demo, flaky upstream) are not shipped.
        if package["name"] == "levee-tests" {
            continue;
        }
        for target in package["targets"].as_array().expect("targets") {
            if target["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
            {
                bins.insert(target["name"].as_str().expect("name").to_owned());
            }
        }
    }
    bins
}

#[test]
fn the_image_copies_what_its_build_stage_builds() {
    let path = repo_root().join("deploy/docker/Dockerfile");
    let text = std::fs::read_to_string(&path).expect("deploy/docker/Dockerfile");
    let steps = instructions(&text);

    // The build stage: its name, its WORKDIR, the binaries `cargo build` makes.
    let from_build = steps
        .iter()
        .position(|(k, a)| k == "FROM" && a.to_lowercase().ends_with(" as build"))
        .expect("a stage named build");
    let runtime = steps
        .iter()
        .rposition(|(k, _)| k == "FROM")
        .expect("a final stage");
    assert!(
        runtime > from_build,
        "the final stage comes after the build"
    );
    let build_stage = &steps[from_build..runtime];
    let workdir = build_stage
        .iter()
        .rev()
        .find(|(k, _)| k == "WORKDIR")
        .map(|(_, a)| a.clone())
        .expect("the build stage sets WORKDIR");
    let cargo_build = build_stage
        .iter()
        .find(|(k, a)| k == "RUN" && a.contains("cargo build"))
        .map(|(_, a)| a.split_whitespace().collect::<Vec<_>>())
        .expect("the build stage runs cargo build");
    assert!(cargo_build.contains(&"--release") && cargo_build.contains(&"--locked"));
    let built: BTreeSet<String> = cargo_build
        .windows(2)
        .filter(|w| w[0] == "--bin")
        .map(|w| w[1].to_owned())
        .collect();

    // The final stage copies from the build's release directory only.
    let release_dir = format!("{}/target/release/", workdir.trim_end_matches('/'));
    let mut copied = BTreeSet::new();
    for (_, args) in steps[runtime..].iter().filter(|(k, _)| k == "COPY") {
        let words: Vec<&str> = args.split_whitespace().collect();
        assert_eq!(words.first(), Some(&"--from=build"), "COPY {args}");
        let sources = &words[1..words.len() - 1];
        for source in sources {
            let name = source
                .strip_prefix(&release_dir)
                .unwrap_or_else(|| panic!("{source} is not in {release_dir}"));
            copied.insert(name.to_owned());
        }
    }

    let expected: BTreeSet<String> = ["levee-proxy", "levee-control-plane", "leveectl"]
        .map(String::from)
        .into();
    assert_eq!(built, expected, "the binaries cargo build builds");
    assert_eq!(copied, expected, "the binaries the image copies");
    assert_eq!(
        shipped_binaries(),
        expected,
        "the workspace's shipped [[bin]]s"
    );
}

#[test]
fn the_image_runs_as_the_uid_init_iptables_exempts() {
    let text = std::fs::read_to_string(repo_root().join("deploy/docker/Dockerfile"))
        .expect("deploy/docker/Dockerfile");
    let user = instructions(&text)
        .into_iter()
        .rfind(|(k, _)| k == "USER")
        .map(|(_, a)| a)
        .expect("a USER");
    assert_eq!(user, "2102:2102");
    let help = Command::new(binary("levee-proxy"))
        .args(["init-iptables", "--help"])
        .output()
        .expect("levee-proxy runs");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("[default: 2102]"), "{help}");
}
