//! The deployment files checked by real validators: the kustomize base and every overlay
//! rendered by `kubectl kustomize` and validated by `kubernetes-validate --strict`; the whole of
//! `deploy/k8s` scanned by checkov (Kubernetes and kustomize frameworks, offline) with no failure
//! beyond the justified skips in `deploy/k8s/.checkov.yaml`; and the compose file read by
//! `docker-compose config`. Each validator is also shown a broken copy, which it must refuse.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_yaml::Value;
use support::cli::run_bounded;
use support::repo;
use support::tools::{system_program, venv_program};

/// Longest any validator may take (checkov takes seconds; a hang fails the test).
const LIMIT: Duration = Duration::from_secs(300);

/// `deploy/k8s`, as a plain absolute path (checkov finds nothing under a path with `..`).
fn k8s() -> PathBuf {
    repo().join("deploy/k8s").canonicalize().unwrap()
}

/// A temporary folder whose path has no hidden component (checkov skips hidden folders).
fn visible_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("fleetgate-deploy-")
        .tempdir()
        .unwrap()
}

/// The kustomizations to render: the base and every overlay, by name.
fn kustomizations() -> Vec<(String, PathBuf)> {
    let mut overlays: Vec<(String, PathBuf)> = std::fs::read_dir(k8s().join("overlays"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("kustomization.yaml").is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_str().unwrap().to_owned();
            (format!("overlay-{name}"), p)
        })
        .collect();
    overlays.sort();
    assert!(!overlays.is_empty(), "no overlay under deploy/k8s/overlays");
    let mut all = vec![("base".to_owned(), k8s().join("base"))];
    all.extend(overlays);
    all
}

/// `kubectl kustomize DIR`: the manifests as they would be applied.
fn render(dir: &Path) -> String {
    let (code, stdout, stderr) =
        run_bounded(system_program("kubectl").arg("kustomize").arg(dir), LIMIT);
    assert_eq!(
        code,
        Some(0),
        "kubectl kustomize {}: {stderr}",
        dir.display()
    );
    stdout
}

fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

/// Runs `kubernetes-validate --strict` (against Kubernetes `version`, or its default) on
/// `files`; returns (exit code, output).
fn kubernetes_validate(files: &[PathBuf], version: Option<&str>) -> (Option<i32>, String) {
    let mut command = venv_program("kubernetes-validate");
    command.arg("--strict");
    if let Some(version) = version {
        command.args(["-k", version]);
    }
    let (code, stdout, stderr) = run_bounded(command.args(files), LIMIT);
    (code, format!("{stdout}{stderr}"))
}

#[test]
fn every_kustomization_renders_and_passes_kubernetes_validate_strict() {
    let work = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut resources = Vec::new();
    for (name, dir) in kustomizations() {
        let text = render(&dir);
        let docs = documents(&text);
        assert!(docs.len() >= 12, "{name}: {} documents", docs.len());
        for doc in &docs {
            resources.push(format!(
                "{}/{}",
                doc["kind"].as_str().unwrap().to_lowercase(),
                doc["metadata"]["name"].as_str().unwrap()
            ));
        }
        let file = work.path().join(format!("{name}.yaml"));
        std::fs::write(&file, text).unwrap();
        files.push(file);
    }
    // The default is the newest Kubernetes the validator knows; 1.27 is the oldest these
    // manifests need (gRPC probes and CronJob time zones are generally available from it).
    for version in [None, Some("1.27.0")] {
        let (code, output) = kubernetes_validate(&files, version);
        assert_eq!(code, Some(0), "kubernetes-validate {version:?}:\n{output}");
        let passed = output.matches(" passed for resource ").count();
        assert_eq!(passed, resources.len(), "{version:?}:\n{output}");
        for resource in &resources {
            assert!(
                output.contains(&format!("passed for resource {resource} ")),
                "{resource}"
            );
        }
    }
    // Strict means strict: a misspelt field is refused.
    let broken = work.path().join("broken.yaml");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    std::fs::write(
        &broken,
        text.replacen("imagePullPolicy:", "imagePullPolicyy:", 1),
    )
    .unwrap();
    let (code, output) = kubernetes_validate(&[broken], None);
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains("'imagePullPolicyy' was unexpected"),
        "{output}"
    );
}

/// Every object's labels, and every pod template's, from a rendered kustomization.
fn labelled(docs: &[Value]) -> Vec<(String, &Value)> {
    let mut all = Vec::new();
    for doc in docs {
        let name = format!(
            "{} {}",
            doc["kind"].as_str().unwrap(),
            doc["metadata"]["name"].as_str().unwrap()
        );
        all.push((name.clone(), &doc["metadata"]["labels"]));
        let template = match doc["kind"].as_str().unwrap() {
            "Deployment" | "DaemonSet" => &doc["spec"]["template"],
            "CronJob" => &doc["spec"]["jobTemplate"]["spec"]["template"],
            _ => continue,
        };
        all.push((
            format!("{name} pod template"),
            &template["metadata"]["labels"],
        ));
    }
    all
}

fn containers(docs: &[Value]) -> Vec<&Value> {
    docs.iter()
        .filter_map(|doc| match doc["kind"].as_str().unwrap() {
            "Deployment" | "DaemonSet" => Some(&doc["spec"]["template"]["spec"]["containers"]),
            "CronJob" => {
                Some(&doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"])
            }
            _ => None,
        })
        .flat_map(|list| list.as_sequence().unwrap())
        .collect()
}

#[test]
fn the_example_overlay_pins_the_images_and_sets_the_gpus_per_node_and_the_version() {
    let docs = documents(&render(&k8s().join("overlays/example")));
    let images: BTreeSet<&str> = containers(&docs)
        .iter()
        .map(|c| {
            assert_eq!(c["imagePullPolicy"], "IfNotPresent", "{c:?}");
            c["image"].as_str().unwrap()
        })
        .collect();
    let expected: BTreeSet<&str> = [
        "registry.example.com/fleetgate/agent-tensorflow:0.1.0",
        "registry.example.com/fleetgate/agent:0.1.0",
        "registry.example.com/fleetgate/coordinator:0.1.0",
    ]
    .into();
    assert_eq!(images, expected);
    for (what, labels) in labelled(&docs) {
        assert_eq!(labels["app.kubernetes.io/version"], "0.1.0", "{what}");
        assert_eq!(labels["app.kubernetes.io/part-of"], "fleetgate", "{what}");
    }
    let gpu = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet" && d["metadata"]["name"] == "fleetgate-agent-gpu")
        .unwrap();
    assert_eq!(
        gpu["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
            .as_u64(),
        Some(8)
    );
    // Selectors are immutable: the version label stays out of them.
    for doc in &docs {
        assert!(
            doc["spec"]["selector"]["matchLabels"]["app.kubernetes.io/version"].is_null(),
            "{:?}",
            doc["metadata"]["name"]
        );
    }
    // The base, rendered, is what the offline tests read: the version is left to overlays.
    let base = documents(&render(&k8s().join("base")));
    for (what, labels) in labelled(&base) {
        assert!(labels["app.kubernetes.io/version"].is_null(), "{what}");
        assert_eq!(
            labels["app.kubernetes.io/managed-by"], "kustomize",
            "{what}"
        );
    }
}

/// The checks `deploy/k8s/.checkov.yaml` skips, each with the comment lines just above it
/// that say why.
fn checkov_skips() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(k8s().join(".checkov.yaml")).unwrap();
    let config: Value = serde_yaml::from_str(&text).unwrap();
    let listed: Vec<&str> = config["skip-check"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let lines: Vec<&str> = text.lines().collect();
    let skips: Vec<(String, String)> = listed
        .iter()
        .map(|id| {
            let at = lines
                .iter()
                .position(|l| l.trim() == format!("- {id}"))
                .unwrap_or_else(|| panic!(".checkov.yaml: {id} is not on a line of its own"));
            let reason: Vec<&str> = lines[..at]
                .iter()
                .rev()
                .map_while(|l| l.trim().strip_prefix('#'))
                .collect();
            assert!(
                reason.iter().map(|r| r.trim().len()).sum::<usize>() >= 40,
                ".checkov.yaml: {id} has no reason above it"
            );
            (
                (*id).to_owned(),
                reason.into_iter().rev().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    assert!(skips.len() <= 3, "keep the skip list short: {skips:?}");
    skips
}

/// Runs checkov offline on `dir` (with whatever `.checkov.yaml` it holds), from an empty
/// folder with an empty home (no other configuration applies); returns (exit code, the
/// reports, one per framework).
fn checkov(dir: &Path, extra: &[&str]) -> (Option<i32>, Vec<serde_json::Value>) {
    let home = visible_tempdir();
    let mut command: Command = venv_program("checkov");
    command
        .current_dir(home.path())
        .env("HOME", home.path())
        // No platform mapping download, no version check: everything stays on this machine.
        .env("BC_SKIP_MAPPING", "TRUE")
        .env("CKV_SKIP_PACKAGE_UPDATE_CHECK", "TRUE")
        .arg("-d")
        .arg(dir)
        .args([
            "--framework",
            "kubernetes",
            "kustomize",
            "--skip-download",
            "--compact",
            "-o",
            "json",
        ])
        .args(extra);
    let (code, stdout, stderr) = run_bounded(&mut command, LIMIT);
    let parsed: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("checkov printed no JSON ({e}):\n{stdout}\n{stderr}"));
    let reports = match parsed {
        serde_json::Value::Array(list) => list,
        one => vec![one],
    };
    (code, reports)
}

fn report<'a>(reports: &'a [serde_json::Value], framework: &str) -> &'a serde_json::Value {
    reports
        .iter()
        .find(|r| r["check_type"] == framework)
        .unwrap_or_else(|| panic!("checkov ran no {framework} scan (is kubectl on the PATH?)"))
}

/// (check id, resource) of each failed check of every report.
fn failures(reports: &[serde_json::Value]) -> Vec<(String, String)> {
    reports
        .iter()
        .flat_map(|r| {
            r["results"]["failed_checks"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|f| {
            (
                f["check_id"].as_str().unwrap().to_owned(),
                format!(
                    "{} {}",
                    f["file_path"].as_str().unwrap(),
                    f["resource"].as_str().unwrap()
                ),
            )
        })
        .collect()
}

/// Copies the folder `from` to `to`, leaving out files named `except`.
fn copy_tree(from: &Path, to: &Path, except: &str) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target, except);
        } else if entry.file_name() != except {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn checkov_finds_no_failure_beyond_the_justified_skips() {
    let skips = checkov_skips();
    // As an operator runs it: `checkov -d deploy/k8s` reads deploy/k8s/.checkov.yaml.
    let (code, reports) = checkov(&k8s(), &[]);
    let failed = failures(&reports);
    assert!(
        failed.is_empty(),
        "checkov failures not in the skip list: {failed:#?}"
    );
    assert_eq!(code, Some(0));
    // Both scans ran and saw the base and every overlay.
    assert!(
        report(&reports, "kubernetes")["summary"]["passed"]
            .as_u64()
            .unwrap()
            > 100
    );
    let kustomize = report(&reports, "kustomize");
    let scanned: BTreeSet<String> = kustomize["results"]["passed_checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["file_path"].as_str().unwrap().to_owned())
        .collect();
    for (name, dir) in kustomizations() {
        let relative = dir.strip_prefix(k8s()).unwrap().join("kustomization.yaml");
        assert!(
            scanned
                .iter()
                .any(|p| p.ends_with(relative.to_str().unwrap())),
            "checkov did not scan {name}: {scanned:?}"
        );
    }
    // Without the skip list, exactly the skipped checks fail: none is stale, none hides more.
    let work = visible_tempdir();
    copy_tree(&k8s(), &work.path().join("k8s"), ".checkov.yaml");
    let (code, reports) = checkov(&work.path().join("k8s"), &[]);
    assert_eq!(code, Some(1));
    let failed: BTreeSet<String> = failures(&reports).into_iter().map(|(id, _)| id).collect();
    let skipped: BTreeSet<String> = skips.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        failed, skipped,
        "the skip list and checkov's failures without it"
    );
}

#[test]
fn docker_compose_accepts_the_compose_file_and_refuses_a_broken_one() {
    let compose = repo().join("deploy/compose/compose.yaml");
    let config = |file: &Path| {
        let mut command = system_program("docker-compose");
        command.arg("-f").arg(file).args(["config", "-q"]);
        run_bounded(&mut command, LIMIT)
    };
    let (code, _, stderr) = config(&compose);
    assert_eq!(code, Some(0), "docker-compose config: {stderr}");
    // The file is checked against the Compose specification: a wrong condition is refused.
    let work = tempfile::tempdir().unwrap();
    let broken = work.path().join("compose.yaml");
    let text = std::fs::read_to_string(&compose).unwrap();
    assert!(text.contains("condition: service_healthy"));
    std::fs::write(
        &broken,
        text.replace("condition: service_healthy", "condition: healthy"),
    )
    .unwrap();
    let (code, _, stderr) = config(&broken);
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("depends_on.coordinator.condition"),
        "{stderr}"
    );
}
