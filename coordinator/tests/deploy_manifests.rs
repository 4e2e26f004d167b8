//! The Kubernetes manifests and the compose fleet, validated offline: every document parses,
//! has the fields Kubernetes requires, and says what the deployment notes promise; and the
//! compose fleet's secrets, made by `make-secrets.sh` into a temporary folder, are readable by
//! whom they should be.

mod support;

use std::path::{Path, PathBuf};

use serde_yaml::Value;
use support::cli::{clean, text};
use support::repo;

fn deploy() -> PathBuf {
    repo().join("deploy")
}

fn documents(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(deploy().join("k8s").join(file)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{file}: {e}")))
        .collect()
}

fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .fold(v, |v, key| match key.parse::<usize>() {
            Ok(i) => &v[i],
            Err(_) => &v[key],
        })
}

/// Every document of every manifest, with its file's name, in name order.
fn all() -> Vec<(String, Value)> {
    let mut names: Vec<String> = std::fs::read_dir(deploy().join("k8s"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    names.sort();
    names
        .into_iter()
        .flat_map(|name| documents(&name).into_iter().map(move |d| (name.clone(), d)))
        .collect()
}

#[test]
fn every_manifest_is_a_complete_kubernetes_object() {
    let docs = all();
    assert!(docs.len() >= 7, "{} documents", docs.len());
    for (file, doc) in &docs {
        for field in ["apiVersion", "kind", "metadata.name"] {
            assert!(
                get(doc, field).as_str().is_some_and(|s| !s.is_empty()),
                "{file}: {field}"
            );
        }
        if get(doc, "kind") != "Namespace" {
            assert_eq!(get(doc, "metadata.namespace"), "fleetgate", "{file}");
        }
        let pod = match get(doc, "kind").as_str().unwrap() {
            "Deployment" | "DaemonSet" => get(doc, "spec.template.spec"),
            "CronJob" => get(doc, "spec.jobTemplate.spec.template.spec"),
            _ => continue,
        };
        assert_eq!(
            get(pod, "securityContext.runAsNonRoot").as_bool(),
            Some(true),
            "{file}: non-root"
        );
        for container in get(pod, "containers").as_sequence().unwrap() {
            let image = get(container, "image").as_str().unwrap();
            assert!(image.starts_with("fleetgate/"), "{file}: {image}");
        }
        if let Some(labels) = get(doc, "spec.selector.matchLabels").as_mapping() {
            assert_eq!(
                Some(labels),
                get(doc, "spec.template.metadata.labels").as_mapping(),
                "{file}: the selector matches the pod labels"
            );
        }
    }
    let kinds: Vec<&str> = docs
        .iter()
        .map(|(_, d)| get(d, "kind").as_str().unwrap())
        .collect();
    for kind in [
        "Namespace",
        "Deployment",
        "Service",
        "DaemonSet",
        "ConfigMap",
        "CronJob",
    ] {
        assert!(kinds.contains(&kind), "no {kind}");
    }
}

#[test]
fn the_gpu_daemonset_selects_gpu_nodes_and_asks_for_their_gpus() {
    let ds = &documents("agent-gpu-daemonset.yaml")[0];
    let pod = get(ds, "spec.template.spec");
    assert_eq!(pod["nodeSelector"]["nvidia.com/gpu.present"], "true");
    assert_eq!(pod["tolerations"][0]["key"], "nvidia.com/gpu");
    assert!(
        pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
            .as_u64()
            .unwrap()
            >= 1
    );
    // The CPU agents stay off GPU nodes.
    let cpu = &documents("agent-daemonset.yaml")[0];
    let term = get(
        cpu,
        "spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms.0.matchExpressions.0",
    );
    assert_eq!(term["key"], "nvidia.com/gpu.present");
    assert_eq!(term["operator"], "DoesNotExist");
}

#[test]
fn the_configmap_carries_the_shipped_budget_and_the_cronjob_uses_it() {
    let cm = &documents("assets-configmap.yaml")[0];
    for name in [
        "v0.4_operating_budget.json",
        "v0.4_baseline.json",
        "v0.4_tolerances.json",
    ] {
        let carried: serde_json::Value =
            serde_json::from_str(cm["data"][name].as_str().unwrap()).unwrap();
        let shipped: serde_json::Value = serde_json::from_slice(
            &std::fs::read(deploy().join("../docs/benchmarks").join(name)).unwrap(),
        )
        .unwrap();
        assert_eq!(
            carried, shipped,
            "deploy/k8s/assets-configmap.yaml: {name} is out of step with docs/benchmarks"
        );
    }
    let cron = &documents("nightly-cronjob.yaml")[0];
    let args: Vec<&str> = get(
        cron,
        "spec.jobTemplate.spec.template.spec.containers.0.args",
    )
    .as_sequence()
    .unwrap()
    .iter()
    .map(|a| a.as_str().unwrap())
    .collect();
    assert!(args.contains(&"--profile=nightly") && args.contains(&"--check"));
    assert!(args.contains(&"--budgets=/etc/fleetgate/v0.4_operating_budget.json"));
}

#[test]
fn the_compose_fleet_has_a_coordinator_and_three_distinct_agents() {
    let text = std::fs::read_to_string(deploy().join("compose/compose.yaml")).unwrap();
    let compose: Value = serde_yaml::from_str(&text).unwrap();
    let services = compose["services"].as_mapping().unwrap();
    assert!(services.contains_key("coordinator"));
    let agents: Vec<&Value> = ["agent-1", "agent-2", "agent-3"]
        .iter()
        .map(|a| &compose["services"][*a])
        .collect();
    let ids: Vec<&str> = agents
        .iter()
        .map(|a| a["environment"]["FLEETGATE_AGENT_ID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["agent-1", "agent-2", "agent-3"]);
    assert!(agents.iter().all(|a| {
        a["environment"]["FLEETGATE_AGENT_LABELS"]
            .as_str()
            .is_some()
    }));
    let classes: Vec<Option<&str>> = agents
        .iter()
        .map(|a| a["environment"]["FLEETGATE_HARDWARE_CLASS"].as_str())
        .collect();
    assert_eq!(
        classes,
        [Some("lab-small"), Some("lab-medium"), None],
        "agent-3 derives its class"
    );
}

/// The value of environment variable `name` in a Kubernetes container spec.
fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    get(container, "env")
        .as_sequence()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
}

/// Whether `path` lies under one of the container's volume mounts.
fn mounted(container: &Value, path: &str) -> bool {
    get(container, "volumeMounts")
        .as_sequence()
        .is_some_and(|mounts| {
            mounts.iter().any(|m| {
                m["mountPath"]
                    .as_str()
                    .is_some_and(|dir| path.starts_with(&format!("{dir}/")))
            })
        })
}

#[test]
fn every_kubernetes_connection_is_tls_with_tokens_from_mounted_secrets() {
    let coordinator = &documents("coordinator.yaml")[0];
    let server = get(coordinator, "spec.template.spec.containers.0");
    for var in [
        "FLEETGATE_TLS_CERT",
        "FLEETGATE_TLS_KEY",
        "FLEETGATE_AGENT_TOKEN_FILE",
        "FLEETGATE_CLIENT_TOKEN_FILE",
    ] {
        let path = env_value(server, var).unwrap_or_else(|| panic!("coordinator: no {var}"));
        assert!(
            mounted(server, path),
            "coordinator: {var}={path} is not mounted"
        );
    }
    for file in ["agent-daemonset.yaml", "agent-gpu-daemonset.yaml"] {
        let docs = documents(file);
        let agent = get(&docs[0], "spec.template.spec.containers.0");
        assert!(
            env_value(agent, "FLEETGATE_COORDINATOR").is_some_and(|u| u.starts_with("https://")),
            "{file}"
        );
        for var in ["FLEETGATE_CA_FILE", "FLEETGATE_AGENT_TOKEN_FILE"] {
            let path = env_value(agent, var).unwrap_or_else(|| panic!("{file}: no {var}"));
            assert!(mounted(agent, path), "{file}: {var}={path} is not mounted");
        }
    }
    let cron = &documents("nightly-cronjob.yaml")[0];
    let run = get(cron, "spec.jobTemplate.spec.template.spec.containers.0");
    let args: Vec<&str> = get(run, "args")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.iter().any(|a| a.starts_with("--coordinator=https://")));
    for flag in ["--ca-file=", "--token-file="] {
        let path = args
            .iter()
            .find_map(|a| a.strip_prefix(flag))
            .unwrap_or_else(|| panic!("cronjob: no {flag}"));
        assert!(mounted(run, path), "cronjob: {flag}{path} is not mounted");
    }
}

#[test]
fn the_compose_fleet_uses_mutual_tls_and_each_agent_presents_its_own_certificate() {
    let text = std::fs::read_to_string(deploy().join("compose/compose.yaml")).unwrap();
    let mut compose: Value = serde_yaml::from_str(&text).unwrap();
    compose.apply_merge().unwrap();
    let server = &compose["services"]["coordinator"]["environment"];
    for var in [
        "FLEETGATE_TLS_CERT",
        "FLEETGATE_TLS_KEY",
        "FLEETGATE_AGENT_CA",
    ] {
        assert!(server[var].as_str().is_some(), "coordinator: no {var}");
    }
    for id in ["agent-1", "agent-2", "agent-3"] {
        let env = &compose["services"][id]["environment"];
        assert!(
            env["FLEETGATE_COORDINATOR"]
                .as_str()
                .is_some_and(|u| u.starts_with("https://")),
            "{id}"
        );
        assert_eq!(
            env["FLEETGATE_AGENT_CERT_FILE"].as_str(),
            Some(format!("/run/fleetgate/agent-{id}.pem").as_str()),
            "{id}"
        );
    }
}

/// The secret files a compose service mounts: (file name in the secrets folder, path in the
/// container), every one a read-only bind mount of a single file.
fn compose_secret_mounts(service: &Value, name: &str) -> Vec<(String, String)> {
    let mut mounts = Vec::new();
    for volume in service["volumes"].as_sequence().unwrap() {
        if let Some(short) = volume.as_str() {
            assert!(
                !short.contains("/run/fleetgate") && !short.contains("SECRETS"),
                "{name}: {short} mounts the secrets folder"
            );
            continue;
        }
        let source = volume["source"].as_str().unwrap();
        let target = volume["target"].as_str().unwrap();
        assert_eq!(volume["type"], "bind", "{name}: {target}");
        assert_eq!(
            volume["read_only"].as_bool(),
            Some(true),
            "{name}: {target}"
        );
        let (folder, file) = source.rsplit_once('/').unwrap();
        assert_eq!(
            folder, "${FLEETGATE_SECRETS:-./secrets}",
            "{name}: {source}"
        );
        assert_eq!(
            target,
            format!("/run/fleetgate/{file}"),
            "{name}: one file, under its own name"
        );
        mounts.push((file.to_owned(), target.to_owned()));
    }
    mounts.sort();
    mounts
}

#[test]
fn each_compose_container_mounts_only_the_secrets_it_needs() {
    let text = std::fs::read_to_string(deploy().join("compose/compose.yaml")).unwrap();
    let mut compose: Value = serde_yaml::from_str(&text).unwrap();
    compose.apply_merge().unwrap();
    let files = |list: &[&str]| {
        let mut v: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
        v.sort();
        v
    };
    let mut expected = vec![(
        "coordinator".to_owned(),
        files(&[
            "coordinator.pem",
            "coordinator.key",
            "ca.pem",
            "agent.token",
            "client.token",
        ]),
    )];
    for id in ["agent-1", "agent-2", "agent-3"] {
        expected.push((
            id.to_owned(),
            files(&[
                &format!("agent-{id}.pem"),
                &format!("agent-{id}.key"),
                "ca.pem",
                "agent.token",
            ]),
        ));
    }
    assert_eq!(
        compose["services"].as_mapping().unwrap().len(),
        expected.len()
    );
    for (name, want) in expected {
        let service = &compose["services"][name.as_str()];
        let mounts = compose_secret_mounts(service, &name);
        let got: Vec<String> = mounts.iter().map(|(file, _)| file.clone()).collect();
        assert_eq!(got, want, "{name}");
        // Every file the service's environment names is one it mounts.
        for (var, value) in service["environment"].as_mapping().unwrap() {
            let Some(path) = value.as_str().filter(|v| v.starts_with("/run/fleetgate/")) else {
                continue;
            };
            assert!(
                mounts.iter().any(|(_, target)| target == path),
                "{name}: {var:?}={path} is not mounted"
            );
        }
        // The containers' user gets the group that keys made without root are readable by.
        assert_eq!(
            service["group_add"][0].as_str(),
            Some("${FLEETGATE_SECRETS_GID:-10001}"),
            "{name}"
        );
    }
}

/// Runs `deploy/compose/make-secrets.sh` into `dir`, as `uid` (through `setpriv`) if given.
fn make_secrets(dir: &Path, uid: Option<u32>) {
    let script = deploy().join("compose/make-secrets.sh");
    let mut command = match uid {
        Some(uid) => {
            let mut c = std::process::Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .arg("--clear-groups")
                .arg(&script);
            c
        }
        None => std::process::Command::new(&script),
    };
    let out = clean(&mut command)
        .arg(dir)
        .env("FLEETGATE_BIN", env!("CARGO_BIN_EXE_fleetgate"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// (mode, uid, gid) of every file in `dir`, by name.
fn owners(dir: &Path) -> std::collections::BTreeMap<String, (u32, u32, u32)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (
                e.file_name().into_string().unwrap(),
                (m.mode() & 0o7777, m.uid(), m.gid()),
            )
        })
        .collect()
}

/// Checks a secrets folder made by `owner` (uid, gid): the folder and the CA key the owner's
/// alone, the certificates public, the keys and tokens the containers read owned by `reader`
/// (uid, gid) with `reader_mode`; no other file.
fn assert_secret_modes(dir: &Path, owner: (u32, u32), reader: (u32, u32), reader_mode: u32) {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(dir).unwrap();
    assert_eq!((meta.mode() & 0o7777, meta.uid()), (0o700, owner.0));
    let files = owners(dir);
    let mut expected: Vec<String> = [
        "agent.token",
        "ca.key",
        "ca.pem",
        "client.token",
        "coordinator.key",
        "coordinator.pem",
    ]
    .map(String::from)
    .to_vec();
    for id in ["agent-1", "agent-2", "agent-3", "agent-ro"] {
        expected.push(format!("agent-{id}.key"));
        expected.push(format!("agent-{id}.pem"));
    }
    expected.sort();
    assert_eq!(files.keys().cloned().collect::<Vec<_>>(), expected);
    for (name, (mode, uid, gid)) in &files {
        let want = if name == "ca.key" {
            (0o600, owner.0, owner.1)
        } else if name.ends_with(".pem") {
            (0o644, owner.0, owner.1)
        } else {
            (reader_mode, reader.0, reader.1)
        };
        assert_eq!((*mode, *uid, *gid), want, "{name}");
    }
}

#[test]
fn make_secrets_leaves_keys_and_tokens_readable_only_by_the_containers_user() {
    use std::os::unix::fs::MetadataExt as _;
    let work = tempfile::tempdir().unwrap();
    let self_meta = std::fs::metadata("/proc/self").unwrap();
    let me = (self_meta.uid(), self_meta.gid());
    // As the user running the tests: root gives the files to the containers' user (10001);
    // anyone else keeps them and shares them through their group.
    let dir = work.path().join("secrets");
    make_secrets(&dir, None);
    if me.0 == 0 {
        assert_secret_modes(&dir, me, (10001, 10001), 0o600);
    } else {
        assert_secret_modes(&dir, me, me, 0o640);
    }
    // A second run keeps every key and token, and restores modes loosened in between.
    let ca_key = std::fs::read(dir.join("ca.key")).unwrap();
    let agent_key = std::fs::read(dir.join("agent-agent-1.key")).unwrap();
    let token = std::fs::read(dir.join("client.token")).unwrap();
    for name in ["ca.key", "agent-agent-1.key", "client.token"] {
        std::fs::set_permissions(
            dir.join(name),
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        )
        .unwrap();
    }
    make_secrets(&dir, None);
    assert_eq!(std::fs::read(dir.join("ca.key")).unwrap(), ca_key);
    assert_eq!(
        std::fs::read(dir.join("agent-agent-1.key")).unwrap(),
        agent_key
    );
    assert_eq!(std::fs::read(dir.join("client.token")).unwrap(), token);
    if me.0 == 0 {
        assert_secret_modes(&dir, me, (10001, 10001), 0o600);
        // And as a user without root, the path most labs take: nothing is world-readable.
        let user = 4242;
        std::fs::set_permissions(
            work.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let home = work.path().join("user");
        std::fs::create_dir(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(user), Some(user)).unwrap();
        make_secrets(&home.join("secrets"), Some(user));
        assert_secret_modes(&home.join("secrets"), (user, user), (user, user), 0o640);
    }
}
