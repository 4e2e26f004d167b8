//! The Kubernetes manifests and the compose fleet, validated offline: every document parses,
//! has the fields Kubernetes requires, and says what the deployment notes promise.

use std::path::{Path, PathBuf};

use serde_yaml::Value;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
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

fn all() -> Vec<(String, Value)> {
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(deploy().join("k8s")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".yaml") {
            docs.extend(documents(&name).into_iter().map(|d| (name.clone(), d)));
        }
    }
    docs
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
