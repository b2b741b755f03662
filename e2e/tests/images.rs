//! The Dockerfiles copy enough of the repository for cargo to load and
//! build the workspace. A workspace member they forget makes `docker build`
//! fail at its first step, so these tests assemble the build context from
//! exactly their COPY lines and have cargo load the workspace there. (`make
//! images` builds the images from such a context, so CI builds it too.)

use std::path::{Path, PathBuf};
use std::process::Command;

use sre_space_e2e::repo_dir;

const DOCKERFILES: [&str; 2] = ["images/operator.Dockerfile", "images/chaos.Dockerfile"];

/// The (source, destination) pairs of the COPY lines of a Dockerfile's
/// build stage (its first), as `e2e/cluster/images.sh` reads them.
fn copies(dockerfile: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_dir().join(dockerfile)).expect("the Dockerfile");
    let mut stage = 0;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("FROM ") {
            stage += 1;
        }
        if stage != 1 || !line.starts_with("COPY ") || line.contains("--from") {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        let (dest, sources) = words.split_last().expect("COPY has a destination");
        out.extend(sources.iter().map(|s| (s.to_string(), dest.to_string())));
    }
    out
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).expect("a folder");
        for entry in std::fs::read_dir(from).expect("readable") {
            let entry = entry.expect("an entry");
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().expect("a parent")).expect("a folder");
        std::fs::copy(from, to).expect("copied");
    }
}

/// A build context holding what the Dockerfile copies, and nothing else.
fn context(dockerfile: &str, test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sre-space-image-context-{test}-{}-{}",
        dockerfile.replace('/', "-"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    for (source, dest) in copies(dockerfile) {
        let from = repo_dir().join(&source);
        assert!(
            from.exists(),
            "{dockerfile} copies {source}, which does not exist"
        );
        let to = if dest.ends_with('/') || dest == "." {
            let name = Path::new(&source).file_name().expect("a name");
            dir.join(dest.trim_end_matches('/')).join(name)
        } else {
            dir.join(&dest)
        };
        copy_tree(&from, &to);
    }
    dir
}

/// The workspace members' names, as cargo loads them in `dir`.
fn members(dir: &Path) -> Result<Vec<String>, String> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--offline",
            "--no-deps",
        ])
        .current_dir(dir)
        .output()
        .expect("cargo runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo's JSON");
    let mut names: Vec<String> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| p["name"].as_str().expect("a name").to_owned())
        .collect();
    names.sort();
    Ok(names)
}

#[test]
fn cargo_loads_the_whole_workspace_from_what_each_dockerfile_copies() {
    let whole = members(&repo_dir()).expect("the repository's workspace loads");
    for dockerfile in DOCKERFILES {
        let dir = context(dockerfile, "whole");
        let loaded = members(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        match loaded {
            Ok(names) => assert_eq!(names, whole, "{dockerfile}: the workspace it copies"),
            Err(e) => panic!(
                "{dockerfile} does not copy enough for cargo to load the workspace; add the missing paths to its COPY lines:\n{e}"
            ),
        }
    }
}

#[test]
fn both_dockerfiles_copy_the_same_workspace_and_build_with_the_lock_file() {
    let operator = copies(DOCKERFILES[0]);
    assert!(
        !operator.is_empty(),
        "the operator's Dockerfile copies the workspace"
    );
    assert_eq!(
        copies(DOCKERFILES[1]),
        operator,
        "make images builds both from one context"
    );
    for dockerfile in DOCKERFILES {
        let text = std::fs::read_to_string(repo_dir().join(dockerfile)).expect("the Dockerfile");
        assert!(
            text.contains("cargo build --release --locked"),
            "{dockerfile} builds with Cargo.lock"
        );
        assert!(
            text.contains("USER 65532:65532"),
            "{dockerfile} runs as the non-root user"
        );
    }
}

/// The check has teeth: a context without a workspace member does not load.
#[test]
fn a_context_missing_a_workspace_member_does_not_load() {
    let dir = context(DOCKERFILES[0], "missing");
    std::fs::remove_dir_all(dir.join("demo-apps")).expect("the demo is copied");
    let loaded = members(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let error = loaded.expect_err("cargo refuses a workspace missing a member");
    assert!(error.contains("demo-apps"), "{error}");
}
