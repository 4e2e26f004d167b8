//! The Kubernetes manifests (the kustomize base, `deploy/k8s/base/`) and the compose fleet,
//! checked offline: every document parses, has the fields Kubernetes requires, follows the
//! deployment conventions (labels, Pod Security "restricted", resources, probes, network
//! policies, the report volume) and says what the deployment notes promise; and the compose
//! fleet's secrets, made by `make-secrets.sh` into a temporary folder, are readable by whom they
//! should be. The real validators (kubectl kustomize, kubernetes-validate, checkov,
//! docker-compose) run in `deploy_validators.rs`.

mod support;

use std::path::{Path, PathBuf};

use serde_yaml::Value;
use support::cli::{clean, text};
use support::repo;

fn deploy() -> PathBuf {
    repo().join("deploy")
}

/// The kustomize base.
fn base() -> PathBuf {
    deploy().join("k8s/base")
}

/// The documents of the base's manifest `file`.
fn documents(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(base().join(file)).unwrap();
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

/// The base's resources, as its kustomization lists them.
fn resources() -> Vec<String> {
    let kustomization = &documents("kustomization.yaml")[0];
    kustomization["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect()
}

/// Every document of every manifest of the base, with its file's name.
fn all() -> Vec<(String, Value)> {
    resources()
        .into_iter()
        .flat_map(|name| documents(&name).into_iter().map(move |d| (name.clone(), d)))
        .collect()
}

/// The document of `kind` named `name` in the base.
fn object(kind: &str, name: &str) -> Value {
    all()
        .into_iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/k8s/base"))
}

/// A workload's pod template (metadata and spec).
fn pod_template(doc: &Value) -> Option<&Value> {
    match doc["kind"].as_str()? {
        "Deployment" | "DaemonSet" => Some(get(doc, "spec.template")),
        "CronJob" => Some(get(doc, "spec.jobTemplate.spec.template")),
        _ => None,
    }
}

fn containers(pod: &Value) -> &Vec<Value> {
    get(pod, "spec.containers").as_sequence().unwrap()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

/// The recommended labels every object carries.
const LABELS: [&str; 4] = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
];

#[test]
fn the_base_lists_every_manifest_in_its_folder() {
    let mut listed = resources();
    listed.sort();
    let mut files: Vec<String> = std::fs::read_dir(base())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        .collect();
    files.sort();
    assert_eq!(
        listed, files,
        "deploy/k8s/base/kustomization.yaml resources"
    );
    // Nothing is left at the old flat place.
    let stray: Vec<String> = std::fs::read_dir(deploy().join("k8s"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".yaml") && !name.starts_with('.'))
        .collect();
    assert_eq!(stray, Vec::<String>::new(), "manifests outside base/");
}

#[test]
fn every_manifest_is_a_complete_labelled_kubernetes_object() {
    let docs = all();
    assert!(docs.len() >= 12, "{} documents", docs.len());
    for (file, doc) in &docs {
        for field in ["apiVersion", "kind", "metadata.name"] {
            assert!(
                get(doc, field).as_str().is_some_and(|s| !s.is_empty()),
                "{file}: {field}"
            );
        }
        let what = format!(
            "{file}: {} {}",
            doc["kind"].as_str().unwrap(),
            get(doc, "metadata.name").as_str().unwrap()
        );
        if doc["kind"] != "Namespace" {
            assert_eq!(get(doc, "metadata.namespace"), "fleetgate", "{what}");
        }
        let labels = get(doc, "metadata.labels");
        for label in LABELS {
            assert!(
                labels[label].as_str().is_some_and(|s| !s.is_empty()),
                "{what}: no {label}"
            );
        }
        assert_eq!(labels["app.kubernetes.io/part-of"], "fleetgate", "{what}");
        assert_eq!(labels["app.kubernetes.io/instance"], "fleetgate", "{what}");
        assert!(
            labels["app.kubernetes.io/version"].is_string()
                || labels["app.kubernetes.io/managed-by"].is_string(),
            "{what}: neither version nor managed-by"
        );
        let Some(template) = pod_template(doc) else {
            continue;
        };
        let pod_labels = get(template, "metadata.labels").as_mapping().unwrap();
        for label in LABELS {
            assert!(
                pod_labels.contains_key(label),
                "{what}: the pod template has no {label}"
            );
        }
        if let Some(selector) = get(doc, "spec.selector.matchLabels").as_mapping() {
            for (key, value) in selector {
                assert_eq!(
                    pod_labels.get(key),
                    Some(value),
                    "{what}: the selector's {key:?} is not on the pod template"
                );
            }
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
        "PersistentVolumeClaim",
        "NetworkPolicy",
    ] {
        assert!(kinds.contains(&kind), "no {kind}");
    }
    // The namespace enforces what every pod below follows.
    let namespace = object("Namespace", "fleetgate");
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
}

#[test]
fn every_pod_meets_pod_security_restricted_with_resources_and_a_pinned_pull_policy() {
    let mut pods = 0;
    for (file, doc) in &all() {
        let Some(template) = pod_template(doc) else {
            continue;
        };
        pods += 1;
        let name = get(doc, "metadata.name").as_str().unwrap();
        let pod = get(template, "spec");
        assert_eq!(
            pod["automountServiceAccountToken"].as_bool(),
            Some(false),
            "{file}: {name} mounts a service-account token"
        );
        let context = &pod["securityContext"];
        assert_eq!(
            context["runAsNonRoot"].as_bool(),
            Some(true),
            "{file}: {name}"
        );
        assert!(
            context["runAsUser"].as_u64().is_some_and(|uid| uid > 0),
            "{file}: {name}"
        );
        assert_eq!(
            get(context, "seccompProfile.type"),
            "RuntimeDefault",
            "{file}: {name}"
        );
        assert!(
            pod["hostNetwork"].is_null() && pod["hostPID"].is_null(),
            "{file}: {name}"
        );
        for container in containers(template) {
            let what = format!("{file}: {name}/{}", container["name"].as_str().unwrap());
            let image = container["image"].as_str().unwrap();
            assert!(image.starts_with("fleetgate/"), "{what}: {image}");
            assert_eq!(container["imagePullPolicy"], "IfNotPresent", "{what}");
            let security = &container["securityContext"];
            assert_eq!(
                security["allowPrivilegeEscalation"].as_bool(),
                Some(false),
                "{what}"
            );
            assert_eq!(
                security["readOnlyRootFilesystem"].as_bool(),
                Some(true),
                "{what}"
            );
            assert_eq!(security["runAsNonRoot"].as_bool(), Some(true), "{what}");
            assert_eq!(
                strings(get(security, "capabilities.drop")),
                ["ALL"],
                "{what}"
            );
            assert!(get(security, "capabilities.add").is_null(), "{what}");
            assert_eq!(
                get(security, "seccompProfile.type"),
                "RuntimeDefault",
                "{what}"
            );
            assert!(security["privileged"].as_bool() != Some(true), "{what}");
            for kind in ["requests", "limits"] {
                for resource in ["cpu", "memory"] {
                    assert!(
                        !container["resources"][kind][resource].is_null(),
                        "{what}: no {kind}.{resource}"
                    );
                }
            }
        }
    }
    assert_eq!(pods, 4, "coordinator, two agent DaemonSets, the CronJob");
}

#[test]
fn the_gpu_daemonset_selects_gpu_nodes_and_asks_for_one_gpu_in_the_base() {
    let ds = object("DaemonSet", "fleetgate-agent-gpu");
    let pod = get(&ds, "spec.template.spec");
    assert_eq!(pod["nodeSelector"]["nvidia.com/gpu.present"], "true");
    assert_eq!(pod["tolerations"][0]["key"], "nvidia.com/gpu");
    assert_eq!(pod["runtimeClassName"], "nvidia");
    // Overlays set the count per node (overlays/example: 8).
    assert_eq!(
        pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"].as_u64(),
        Some(1)
    );
    // The CPU agents stay off GPU nodes.
    let cpu = object("DaemonSet", "fleetgate-agent");
    let term = get(
        &cpu,
        "spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms.0.matchExpressions.0",
    );
    assert_eq!(term["key"], "nvidia.com/gpu.present");
    assert_eq!(term["operator"], "DoesNotExist");
}

/// A container's port number by name.
fn port(container: &Value, name: &str) -> Option<u64> {
    container["ports"]
        .as_sequence()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
}

#[test]
fn the_probes_use_the_plaintext_health_port_and_the_agents_health_command() {
    let coordinator = object("Deployment", "fleetgate-coordinator");
    let template = get(&coordinator, "spec.template");
    let server = &containers(template)[0];
    assert_eq!(port(server, "grpc"), Some(7400));
    assert_eq!(port(server, "health"), Some(7401));
    assert_eq!(port(server, "metrics"), Some(9400));
    assert_eq!(
        env_value(server, "FLEETGATE_HEALTH_LISTEN"),
        Some("0.0.0.0:7401")
    );
    assert_eq!(
        env_value(server, "FLEETGATE_METRICS_LISTEN"),
        Some("0.0.0.0:9400")
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            get(server, &format!("{probe}.grpc.port")).as_u64(),
            Some(7401),
            "{probe}"
        );
        assert_eq!(get(server, &format!("{probe}.grpc.service")), "", "{probe}");
    }
    // The Service publishes the TLS port only: health is for the kubelet, metrics for scrapers.
    let service = object("Service", "fleetgate-coordinator");
    let ports: Vec<u64> = get(&service, "spec.ports")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, [7400]);
    let agent_binary = "/usr/local/bin/fleetgate-agent";
    for name in ["fleetgate-agent", "fleetgate-agent-gpu"] {
        let ds = object("DaemonSet", name);
        let template = get(&ds, "spec.template");
        let agent = &containers(template)[0];
        assert_eq!(
            strings(get(agent, "livenessProbe.exec.command")),
            [agent_binary, "health", "--live"],
            "{name}: liveness is the agent's own loop"
        );
        assert_eq!(
            strings(get(agent, "readinessProbe.exec.command")),
            [agent_binary, "health"],
            "{name}: readiness is contact with the coordinator"
        );
        assert_eq!(port(agent, "metrics"), Some(9400), "{name}");
        assert_eq!(
            env_value(agent, "FLEETGATE_METRICS_LISTEN"),
            Some("0.0.0.0:9400"),
            "{name}"
        );
    }
    for (kind, name) in [
        ("Deployment", "fleetgate-coordinator"),
        ("DaemonSet", "fleetgate-agent"),
        ("DaemonSet", "fleetgate-agent-gpu"),
    ] {
        let doc = object(kind, name);
        let annotations = get(&doc, "spec.template.metadata.annotations");
        assert_eq!(annotations["prometheus.io/scrape"], "true", "{name}");
        assert_eq!(annotations["prometheus.io/port"], "9400", "{name}");
        assert_eq!(annotations["prometheus.io/path"], "/metrics", "{name}");
    }
}

/// Whether a label selector (`matchLabels` only, as the policies here use) selects `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    assert!(
        selector["matchExpressions"].is_null(),
        "matchExpressions is not modelled here"
    );
    selector["matchLabels"]
        .as_mapping()
        .is_none_or(|wanted| wanted.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// A pod: its labels and whether it lives in the fleetgate namespace.
struct Pod {
    labels: Value,
    here: bool,
}

fn pod(labels: &Value, here: bool) -> Pod {
    Pod {
        labels: labels.clone(),
        here,
    }
}

/// Whether a policy peer (`from`/`to` entry) admits `pod`: a podSelector alone means this
/// namespace; with a namespaceSelector `{}`, any namespace.
fn peer_admits(peer: &Value, pod: &Pod) -> bool {
    let namespaces = &peer["namespaceSelector"];
    let namespace_ok = if namespaces.is_null() {
        pod.here
    } else {
        assert!(
            namespaces.as_mapping().is_some_and(|m| m.is_empty()),
            "only namespaceSelector {{}} is modelled here: {namespaces:?}"
        );
        true
    };
    assert!(peer["ipBlock"].is_null(), "ipBlock is not modelled here");
    namespace_ok && (peer["podSelector"].is_null() || selects(&peer["podSelector"], &pod.labels))
}

fn rule_allows(rule: &Value, peers: &str, pod: &Pod, port: u64) -> bool {
    let port_ok = rule["ports"]
        .as_sequence()
        .is_none_or(|ports| ports.iter().any(|p| p["port"].as_u64() == Some(port)));
    let peer_ok = rule[peers]
        .as_sequence()
        .is_none_or(|list| list.iter().any(|peer| peer_admits(peer, pod)));
    port_ok && peer_ok
}

/// Whether the namespace's NetworkPolicies let `from` open a TCP connection to `to`:`port`,
/// as Kubernetes decides it: each direction is open unless a policy of that type selects the
/// pod, and then only what one of those policies allows.
fn allowed(policies: &[Value], from: &Pod, to: &Pod, port: u64) -> bool {
    let direction = |pod: &Pod, kind: &str, rules: &str, peers: &str, other: &Pod| {
        if !pod.here {
            return true;
        }
        let selecting: Vec<&Value> = policies
            .iter()
            .filter(|p| strings(get(p, "spec.policyTypes")).contains(&kind))
            .filter(|p| selects(get(p, "spec.podSelector"), &pod.labels))
            .collect();
        selecting.is_empty()
            || selecting.iter().any(|p| {
                get(p, &format!("spec.{rules}"))
                    .as_sequence()
                    .is_some_and(|list| list.iter().any(|r| rule_allows(r, peers, other, port)))
            })
    };
    direction(from, "Egress", "egress", "to", to)
        && direction(to, "Ingress", "ingress", "from", from)
}

#[test]
fn the_network_policies_let_only_agents_and_clients_reach_the_coordinator() {
    let policies: Vec<Value> = all()
        .into_iter()
        .map(|(_, d)| d)
        .filter(|d| d["kind"] == "NetworkPolicy")
        .collect();
    let labels_of = |kind: &str, name: &str| {
        pod_template(&object(kind, name)).unwrap()["metadata"]["labels"].clone()
    };
    let coordinator_labels = labels_of("Deployment", "fleetgate-coordinator");
    let cpu_agent = labels_of("DaemonSet", "fleetgate-agent");
    let gpu_agent = labels_of("DaemonSet", "fleetgate-agent-gpu");
    let nightly = labels_of("CronJob", "fleetgate-nightly");
    let prometheus_labels: Value =
        serde_yaml::from_str("{app.kubernetes.io/name: prometheus}").unwrap();
    let other_labels: Value = serde_yaml::from_str("{app: something-else}").unwrap();
    let coordinator = pod(&coordinator_labels, true);
    let agents = [pod(&cpu_agent, true), pod(&gpu_agent, true)];
    let client = pod(&nightly, true);
    let prometheus = pod(&prometheus_labels, false);
    let stranger = pod(&other_labels, true);
    let outsider = pod(&other_labels, false);
    let dns = pod(&other_labels, false);

    // The coordinator's gRPC port: the agents and client pods, nobody else.
    for agent in &agents {
        assert!(allowed(&policies, agent, &coordinator, 7400));
        assert!(allowed(&policies, agent, &dns, 53), "agents resolve names");
        assert!(
            !allowed(&policies, agent, &outsider, 443),
            "agents dial nothing else"
        );
    }
    assert!(allowed(&policies, &client, &coordinator, 7400));
    assert!(allowed(&policies, &client, &dns, 53));
    assert!(!allowed(&policies, &client, &outsider, 443));
    for nobody in [&stranger, &outsider, &prometheus] {
        assert!(!allowed(&policies, nobody, &coordinator, 7400));
    }
    // Metrics: Prometheus only, from any namespace.
    assert!(allowed(&policies, &prometheus, &coordinator, 9400));
    assert!(!allowed(&policies, &agents[0], &coordinator, 9400));
    assert!(!allowed(&policies, &stranger, &coordinator, 9400));
    // The health port is for the kubelet (node traffic), no pod's.
    assert!(!allowed(&policies, &agents[0], &coordinator, 7401));
    // The agents accept nothing but scrapes; the client pods nothing at all.
    for agent in &agents {
        assert!(allowed(&policies, &prometheus, agent, 9400));
        for from in [&coordinator, &stranger, &outsider] {
            for port in [7400, 9400, 22] {
                assert!(!allowed(&policies, from, agent, port));
            }
        }
    }
    assert!(!allowed(&policies, &coordinator, &client, 7400));
    // Default deny: every pod of the namespace, even an unknown one, is closed to others.
    assert!(!allowed(&policies, &outsider, &stranger, 8080));
    assert!(!allowed(&policies, &stranger, &outsider, 8080));
}

#[test]
fn the_configmap_carries_the_shipped_budget_and_the_cronjob_uses_it() {
    let cm = &object("ConfigMap", "fleetgate-assets");
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
            "deploy/k8s/base/assets-configmap.yaml: {name} is out of step with docs/benchmarks"
        );
    }
    let cron = object("CronJob", "fleetgate-nightly");
    let args = strings(get(
        &cron,
        "spec.jobTemplate.spec.template.spec.containers.0.args",
    ));
    assert!(args.contains(&"--profile=nightly") && args.contains(&"--check"));
    assert!(args.contains(&"--budgets=/etc/fleetgate/v0.4_operating_budget.json"));
}

#[test]
fn the_nightly_cronjob_keeps_its_reports_on_a_persistent_volume() {
    let cron = object("CronJob", "fleetgate-nightly");
    assert_eq!(get(&cron, "spec.concurrencyPolicy"), "Forbid");
    for limit in ["successfulJobsHistoryLimit", "failedJobsHistoryLimit"] {
        assert!(
            cron["spec"][limit].as_u64().is_some_and(|n| n >= 1),
            "{limit}"
        );
    }
    let pod = get(&cron, "spec.jobTemplate.spec.template.spec");
    let run = &pod["containers"][0];
    let claim = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find_map(|v| {
            v["persistentVolumeClaim"]["claimName"]
                .as_str()
                .map(|claim| (v["name"].as_str().unwrap(), claim))
        })
        .expect("the CronJob mounts no PersistentVolumeClaim");
    let pvc = object("PersistentVolumeClaim", claim.1);
    assert!(get(&pvc, "spec.resources.requests.storage").is_string());
    let reports = run["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == claim.0)
        .and_then(|m| m["mountPath"].as_str())
        .expect("the claim is not mounted");
    assert_eq!(reports, "/var/lib/fleetgate/reports");
    assert_eq!(
        run["workingDir"], reports,
        "relative outputs land on the volume"
    );
    let args = strings(&run["args"]);
    for flag in ["--output=", "--markdown=", "--junit="] {
        let path = args
            .iter()
            .find_map(|a| a.strip_prefix(flag))
            .unwrap_or_else(|| panic!("cronjob: no {flag}"));
        assert!(
            path.starts_with(&format!("{reports}/")),
            "cronjob: {flag}{path} is not on the report volume"
        );
    }
}

#[test]
fn the_compose_fleet_has_a_coordinator_and_three_distinct_agents() {
    let compose = compose();
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

/// The compose file, with its `<<` merge keys applied.
fn compose() -> Value {
    let text = std::fs::read_to_string(deploy().join("compose/compose.yaml")).unwrap();
    let mut compose: Value = serde_yaml::from_str(&text).unwrap();
    // Twice: an agent's merge brings in the hardening's own merge key.
    compose.apply_merge().unwrap();
    compose.apply_merge().unwrap();
    compose
}

#[test]
fn the_compose_fleet_follows_the_compose_specification_and_is_hardened() {
    let compose = compose();
    assert!(
        compose["version"].is_null(),
        "the `version:` key is obsolete in the Compose specification"
    );
    let services = compose["services"].as_mapping().unwrap();
    assert_eq!(services.len(), 4);
    for (name, service) in services {
        let name = name.as_str().unwrap();
        assert!(
            service["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("fleetgate/")),
            "{name}"
        );
        assert_eq!(
            service["pull_policy"], "never",
            "{name}: the images are local"
        );
        assert_eq!(strings(&service["cap_drop"]), ["ALL"], "{name}");
        assert!(
            service["cap_add"].is_null() && service["privileged"].is_null(),
            "{name}"
        );
        assert_eq!(
            strings(&service["security_opt"]),
            ["no-new-privileges:true"],
            "{name}"
        );
        assert_eq!(service["read_only"].as_bool(), Some(true), "{name}");
        assert_eq!(strings(&service["tmpfs"]), ["/tmp"], "{name}");
        let check = strings(get(service, "healthcheck.test"));
        assert_eq!(
            check[0], "CMD",
            "{name}: exec form (the images have no shell)"
        );
        if name == "coordinator" {
            assert_eq!(check[1..], ["/usr/local/bin/fleetgate", "agents", "--json"]);
        } else {
            assert_eq!(
                check[1..],
                ["/usr/local/bin/fleetgate-agent", "health"],
                "{name}"
            );
            assert_eq!(
                get(service, "depends_on.coordinator.condition"),
                "service_healthy",
                "{name}: starts once the coordinator answers"
            );
        }
    }
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
    let coordinator = object("Deployment", "fleetgate-coordinator");
    let server = get(&coordinator, "spec.template.spec.containers.0");
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
    for file in ["fleetgate-agent", "fleetgate-agent-gpu"] {
        let ds = object("DaemonSet", file);
        let agent = get(&ds, "spec.template.spec.containers.0");
        assert!(
            env_value(agent, "FLEETGATE_COORDINATOR").is_some_and(|u| u.starts_with("https://")),
            "{file}"
        );
        for var in ["FLEETGATE_CA_FILE", "FLEETGATE_AGENT_TOKEN_FILE"] {
            let path = env_value(agent, var).unwrap_or_else(|| panic!("{file}: no {var}"));
            assert!(mounted(agent, path), "{file}: {var}={path} is not mounted");
        }
    }
    let cron = object("CronJob", "fleetgate-nightly");
    let run = get(&cron, "spec.jobTemplate.spec.template.spec.containers.0");
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
    let compose = compose();
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
    let compose = compose();
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
