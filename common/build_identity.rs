// The commit a binary is built from, for `--version` and the report's `generator`. Not a module
// of the crate: the build scripts of the binaries (coordinator/build.rs, agent/build.rs) include
// it, and it sets `FLEETGATE_COMMIT` for their code: `git rev-parse --short=12 HEAD` of the
// checkout, with `-dirty` when a tracked file differs from it; else the `FLEETGATE_BUILD_COMMIT`
// environment variable (a tree copied without `.git`, as a container build does); else
// `unknown`.
//
// The script reruns when HEAD moves (`HEAD`, the branch it points to, `packed-refs`), when
// `FLEETGATE_BUILD_COMMIT` changes, and when `sources` change (the folders, relative to the
// workspace root, whose changes rebuild the crate anyway and may make the tree dirty); nothing
// else reruns it. A path that does not exist is never watched: Cargo would rerun every build.

/// Sets `FLEETGATE_COMMIT` for the crate being built, and what reruns this.
fn emit_build_identity(sources: &[&str]) {
    println!("cargo:rerun-if-env-changed=FLEETGATE_BUILD_COMMIT");
    let manifest =
        std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let workspace = manifest.join("..");
    for dir in sources {
        let path = workspace.join(dir);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    let commit = git_commit(&workspace)
        .or_else(|| {
            std::env::var("FLEETGATE_BUILD_COMMIT")
                .ok()
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=FLEETGATE_COMMIT={commit}");
}

/// The checkout's short commit (with `-dirty`), or None outside a git checkout or without git.
fn git_commit(workspace: &std::path::Path) -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(workspace)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let hash = git(&["rev-parse", "--short=12", "HEAD"]).filter(|h| !h.is_empty())?;
    // HEAD, the branch it points to and the packed refs, wherever this checkout (or worktree)
    // keeps them.
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]).filter(|b| !b.is_empty()) {
        watched.push(branch);
    }
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", &name])
            && std::path::Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|changes| !changes.is_empty());
    Some(if dirty { format!("{hash}-dirty") } else { hash })
}
