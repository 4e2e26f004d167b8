//! The files `fleetgate` writes, through the real binary: unsafe output paths are refused
//! before anything runs, a report write that fails keeps the old report whole, and
//! `fleetgate certs` neither replaces a key unasked nor writes through a symbolic link.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::cli::{clean, fleetgate, text, tiny_run};
use support::{relaxed_budgets, repo};

/// A run small enough for a test (50 steps, a 60 s interval: one overhead sample).
fn tiny() -> Vec<&'static str> {
    let mut args = tiny_run("overhead", "gpumemprof_cpu");
    args.push("--check");
    args
}

/// Every file under `dir`, with its content, in name order.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
                files.push((path, None));
            } else if meta.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                files.push((path, Some(bytes)));
            } else {
                files.push((path, None));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_unsafe_output_is_refused_before_the_run_with_one_line() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path().to_str().unwrap().to_owned();
    let artifacts = format!("{w}/artifacts");
    std::fs::write(format!("{w}/old.json"), "old report\n").unwrap();
    std::os::unix::fs::symlink(format!("{w}/old.json"), format!("{w}/link.json")).unwrap();
    std::fs::copy(
        repo().join("docs/benchmarks/v0.4_operating_budget.json"),
        format!("{w}/budgets.json"),
    )
    .unwrap();
    std::fs::write(format!("{w}/knobs.json"), "{}").unwrap();
    std::fs::write(format!("{w}/file"), "a file, not a folder").unwrap();
    std::fs::create_dir(format!("{w}/folder")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        format!("{w}/fifo").as_str(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let shipped_budget =
        std::fs::read(repo().join("docs/benchmarks/v0.4_operating_budget.json")).unwrap();
    let before = snapshot(work.path());

    let cases: Vec<(Vec<String>, i32, String)> = vec![
        (
            vec!["--output", &format!("{w}/r.json"), "--markdown", &format!("{w}/r.json")],
            2,
            format!("--markdown {w}/r.json: is also the file given to --output; give each output its own path"),
        ),
        (
            vec!["--output", &format!("{w}/r.json"), "--junit", &format!("{w}/new/../r.json")],
            2,
            format!("--junit {w}/new/../r.json: is also the file given to --output; give each output its own path"),
        ),
        (
            vec!["--output", &format!("{w}/old.json"), "--write-baseline", &format!("{w}/link.json")],
            2,
            format!("--write-baseline {w}/link.json: is also the file given to --output; give each output its own path"),
        ),
        (
            vec!["--output", &format!("{w}/r.json"), "--budgets", &format!("{w}/budgets.json"), "--markdown", &format!("{w}/budgets.json")],
            2,
            format!("--markdown {w}/budgets.json: is the file given to --budgets, an input of this run; an output must not replace it"),
        ),
        (
            vec!["--output", &format!("{w}/knobs.json"), "--knobs", &format!("{w}/knobs.json")],
            2,
            format!("--output {w}/knobs.json: is the file given to --knobs, an input of this run; an output must not replace it"),
        ),
        (
            vec!["--output", &format!("{w}/folder")],
            1,
            format!("--output {w}/folder: is a directory; give a file path"),
        ),
        (
            vec!["--output", &format!("{w}/r.json"), "--junit", "/dev/full"],
            1,
            "--junit /dev/full: is a character device, not a regular file; give a file path".to_owned(),
        ),
        (
            vec!["--output", "/dev/null"],
            1,
            "--output /dev/null: is a character device, not a regular file; give a file path".to_owned(),
        ),
        (
            vec!["--output", &format!("{w}/r.json"), "--markdown", &format!("{w}/fifo")],
            1,
            format!("--markdown {w}/fifo: is a FIFO, not a regular file; give a file path"),
        ),
        (
            vec!["--output", &format!("{w}/file/sub/r.json")],
            1,
            format!("--output {w}/file/sub/r.json: {w}/file is a file, not a directory"),
        ),
        (
            vec!["--output", "/proc/fleetgate/report.json"],
            1,
            "--output /proc/fleetgate/report.json: cannot create a file in /proc: No such file or directory (os error 2)".to_owned(),
        ),
    ]
    .into_iter()
    .map(|(args, code, line)| (args.into_iter().map(str::to_owned).collect(), code, line))
    .collect();

    for (extra, code, line) in &cases {
        let mut args: Vec<&str> = tiny();
        args.extend(["--artifact-root", &artifacts]);
        args.extend(extra.iter().map(String::as_str));
        let result = fleetgate(&args);
        assert_eq!(
            (result.status.code(), text(&result.stderr)),
            (Some(*code), format!("Error: {line}\n")),
            "{extra:?}"
        );
        assert!(result.stdout.is_empty(), "{extra:?}");
        // Nothing ran and nothing was written or created.
        assert_eq!(snapshot(work.path()), before, "{extra:?}");
    }
    assert_eq!(
        std::fs::read(repo().join("docs/benchmarks/v0.4_operating_budget.json")).unwrap(),
        shipped_budget
    );
}

#[test]
fn outputs_are_checked_before_the_inputs_are_read() {
    let work = tempfile::tempdir().unwrap();
    let artifacts = work.path().join("artifacts");
    let result = fleetgate(&[
        "run",
        "--budgets",
        work.path().join("missing.json").to_str().unwrap(),
        "--output",
        work.path().to_str().unwrap(),
        "--artifact-root",
        artifacts.to_str().unwrap(),
    ]);
    assert_eq!(result.status.code(), Some(1), "{}", text(&result.stderr));
    assert!(!artifacts.exists());
}

#[test]
fn a_run_replaces_its_outputs_whole_and_keeps_a_link_to_the_report() {
    let work = tempfile::tempdir().unwrap();
    let artifacts = work.path().join("artifacts");
    let target = work.path().join("run-1.json");
    std::fs::write(&target, "old report\n").unwrap();
    let link = work.path().join("latest.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let markdown = work.path().join("new/folder/summary.md");
    let budgets = relaxed_budgets::relaxed_overhead_budgets(work.path());
    let mut args = tiny();
    args.extend([
        "--budgets",
        budgets.to_str().unwrap(),
        "--artifact-root",
        artifacts.to_str().unwrap(),
        "--output",
        link.to_str().unwrap(),
        "--markdown",
        markdown.to_str().unwrap(),
    ]);
    let result = fleetgate(&args);
    assert_eq!(result.status.code(), Some(0), "{}", text(&result.stderr));
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&target).unwrap()).unwrap();
    assert_eq!(report["version"], "v0.4");
    assert!(
        std::fs::read_to_string(&markdown)
            .unwrap()
            .starts_with("## fleetgate v0.4 report")
    );
    // The HTML report is next to the path given to --output (not the link's target).
    assert!(
        std::fs::read_to_string(work.path().join("latest.html"))
            .unwrap()
            .starts_with("<!DOCTYPE html>")
    );
    // No temporary file is left next to the outputs.
    let mut names: Vec<String> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "artifacts",
            "latest.html",
            "latest.json",
            "new",
            "relaxed-overhead-budgets.json",
            "run-1.json"
        ]
    );
}

/// The report's folder is a 256 KiB tmpfs, full: the run completes, the report cannot be
/// written, and the old report is still there byte for byte, with no temporary file beside it.
/// The tmpfs is mounted in a private user and mount namespace (`unshare -rm`), where the
/// check runs too, since the mount is invisible outside it.
#[test]
fn a_report_write_that_fails_on_a_full_disk_leaves_the_old_report_byte_identical() {
    let work = tempfile::tempdir().unwrap();
    let mount = work.path().join("full");
    std::fs::create_dir(&mount).unwrap();
    let old = work.path().join("old.json");
    let content: String = (0..400)
        .map(|i| format!("{{\"line\": {i}, \"passed\": true}}\n"))
        .collect();
    std::fs::write(&old, &content).unwrap();
    let artifacts = work.path().join("artifacts");
    let script = r#"
        set -u
        dir="$1"; old="$2"; shift 2
        mount -t tmpfs -o size=256k tmpfs "$dir" || { echo "cannot mount a tmpfs"; exit 90; }
        cp "$old" "$dir/report.json"
        dd if=/dev/zero of="$dir/filler" bs=4k 2>/dev/null
        "$@" --output "$dir/report.json" >/dev/null 2>"$dir.stderr"
        rc=$?
        cmp -s "$old" "$dir/report.json" && same=yes || same=no
        echo "rc=$rc same=$same files=$(ls -A "$dir" | tr '\n' ' ')"
    "#;
    let mut command = Command::new("unshare");
    clean(&mut command)
        .args(["-rm", "sh", "-c", script, "sh"])
        .arg(&mount)
        .arg(&old)
        .arg(env!("CARGO_BIN_EXE_fleetgate"))
        .args(tiny())
        .arg("--artifact-root")
        .arg(&artifacts);
    let result = command
        .output()
        .expect("unshare (util-linux) is needed for this test");
    let stdout = text(&result.stdout);
    assert_eq!(
        stdout,
        "rc=1 same=yes files=filler report.json \n",
        "{}",
        text(&result.stderr)
    );
    let stderr = std::fs::read_to_string(work.path().join("full.stderr")).unwrap();
    let last = stderr.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!(
            "Error: --output: cannot write {}/report.json: No space left on device (os error 28); the file there before, if any, is unchanged",
            mount.display()
        )
    );
    // The run itself did its work before the write failed.
    assert!(artifacts.join("gpumemprof_cpu/overhead").is_dir());
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn certs_never_replace_a_key_unasked_never_follow_a_link_and_force_makes_keys_owner_only() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("certs");
    let d = dir.to_str().unwrap();
    let made = fleetgate(&["certs", "--out", d, "--agent", "a1"]);
    assert_eq!(made.status.code(), Some(0), "{}", text(&made.stderr));
    assert_eq!(
        text(&made.stdout),
        [
            "ca.key",
            "ca.pem",
            "coordinator.key",
            "coordinator.pem",
            "agent-a1.key",
            "agent-a1.pem"
        ]
        .map(|n| format!("{d}/{n}\n"))
        .concat()
    );
    for key in ["ca.key", "coordinator.key", "agent-a1.key"] {
        assert_eq!(mode(&dir.join(key)), 0o600, "{key}");
    }
    for cert in ["ca.pem", "coordinator.pem", "agent-a1.pem"] {
        assert_eq!(mode(&dir.join(cert)), 0o644, "{cert}");
    }
    assert_eq!(mode(&dir), 0o700);
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();

    // An existing key, loosened to 0666, is not rewritten (nor its mode changed) unasked.
    let key = dir.join("agent-a1.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o666)).unwrap();
    let before = snapshot(&dir);
    let again = fleetgate(&["certs", "--out", d, "--agent", "a1"]);
    assert_eq!(
        (again.status.code(), text(&again.stderr)),
        (
            Some(2),
            format!(
                "Error: {d}/agent-a1.key: already exists; pass --force to replace agent a1's certificate and key\n"
            )
        )
    );
    assert_eq!(snapshot(&dir), before);
    assert_eq!(mode(&key), 0o666);

    // A symbolic link at a key's path is refused, with or without --force; its target and
    // the folder stay as they were.
    let target = work.path().join("target");
    std::fs::write(&target, "not a key\n").unwrap();
    std::os::unix::fs::symlink(&target, dir.join("agent-a2.key")).unwrap();
    std::os::unix::fs::symlink(work.path().join("nothing"), dir.join("agent-a3.key")).unwrap();
    let before = snapshot(&dir);
    for (agent, force) in [("a2", false), ("a2", true), ("a3", true)] {
        let mut args = vec!["certs", "--out", d, "--agent", agent];
        if force {
            args.push("--force");
        }
        let refused = fleetgate(&args);
        assert_eq!(
            (refused.status.code(), text(&refused.stderr)),
            (
                Some(1),
                format!(
                    "Error: {d}/agent-{agent}.key: is a symbolic link; certificates and keys are never written through one\n"
                )
            ),
            "{args:?}"
        );
        assert_eq!(snapshot(&dir), before, "{args:?}");
    }
    assert_eq!(std::fs::read(&target).unwrap(), b"not a key\n");
    assert!(!work.path().join("nothing").exists());

    // With --force the key is rewritten, owner-only, and the CA is reused.
    let old_key = std::fs::read(&key).unwrap();
    let forced = fleetgate(&["certs", "--out", d, "--agent", "a1", "--force"]);
    assert_eq!(forced.status.code(), Some(0), "{}", text(&forced.stderr));
    assert_eq!(
        text(&forced.stdout),
        format!("{d}/agent-a1.key\n{d}/agent-a1.pem\n")
    );
    assert_eq!(mode(&key), 0o600);
    let new_key = std::fs::read(&key).unwrap();
    assert_ne!(new_key, old_key);
    assert!(new_key.starts_with(b"-----BEGIN PRIVATE KEY-----"));
    assert_eq!(std::fs::read(dir.join("ca.pem")).unwrap(), ca);
}

#[test]
fn a_reused_ca_key_readable_by_others_is_made_owner_only_only_with_force() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("certs");
    let d = dir.to_str().unwrap();
    assert_eq!(fleetgate(&["certs", "--out", d]).status.code(), Some(0));
    let ca_key = dir.join("ca.key");
    std::fs::set_permissions(&ca_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let warned = fleetgate(&["certs", "--out", d, "--agent", "b1"]);
    assert_eq!(warned.status.code(), Some(0));
    assert!(
        text(&warned.stderr)
            .contains("The CA key is readable by others; pass --force to make it owner-only."),
        "{}",
        text(&warned.stderr)
    );
    assert_eq!(mode(&ca_key), 0o644);
    let fixed = fleetgate(&["certs", "--out", d, "--force"]);
    assert_eq!(fixed.status.code(), Some(0), "{}", text(&fixed.stderr));
    assert_eq!(mode(&ca_key), 0o600);

    // Half a CA is never replaced unasked.
    std::fs::remove_file(dir.join("ca.pem")).unwrap();
    let half = fleetgate(&["certs", "--out", d, "--agent", "b2"]);
    assert_eq!(
        (half.status.code(), text(&half.stderr)),
        (
            Some(2),
            format!(
                "Error: {d}/ca.key: already exists; {d}/ca.pem is missing; pass --force to make a new CA (certificates from the old one stop working)\n"
            )
        )
    );
    assert!(!dir.join("agent-b2.key").exists());
}
