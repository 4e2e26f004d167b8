//! The fleet: host facts, hardware classes, per-agent report sections, the per-class summary,
//! threshold resolution and the verdict.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A GPU an agent reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuFacts {
    /// NVML index.
    pub index: u32,
    /// Product name.
    pub name: String,
    /// UUID.
    pub uuid: String,
    /// PCI bus id.
    pub pci_bus_id: String,
    /// Memory in bytes.
    pub memory_total_bytes: u64,
    /// Driver version.
    pub driver_version: String,
    /// CUDA driver version.
    pub cuda_driver_version: String,
}

/// What an agent knows about its host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    /// Host name.
    pub hostname: String,
    /// Operating system and version.
    pub os: String,
    /// Kernel version.
    pub kernel: String,
    /// CPU model.
    pub cpu_model: String,
    /// Logical cores.
    pub cpu_cores: u32,
    /// Physical memory in bytes.
    pub memory_total_bytes: u64,
    /// GPUs, when NVML loaded and saw some.
    pub gpus: Vec<GpuFacts>,
    /// Why no GPU is listed.
    pub gpu_unavailable_reason: Option<String>,
    /// Whether libtensorflow loads.
    pub tensorflow_available: bool,
    /// Why it does not.
    pub tensorflow_unavailable_reason: Option<String>,
}

/// Whether an agent can run a runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeAvailability {
    /// Runtime name.
    pub runtime: String,
    /// Whether it can run.
    pub available: bool,
    /// Why not.
    pub reason: Option<String>,
}

fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.to_ascii_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_owned()
}

/// The hardware class derived from host facts: GPU hosts by model, memory and count
/// (`nvidia-h100-80gb-x8`), CPU hosts by CPU model and logical cores (`cpu-amd-epyc-7763-2c`).
pub fn derive_hardware_class(facts: &HostFacts) -> String {
    if let Some(gpu) = facts.gpus.first() {
        const NOISE: [&str; 4] = ["nvidia", "geforce", "tesla", "pcie"];
        let model = slug(&gpu.name)
            .split('-')
            .filter(|w| {
                !NOISE.contains(w)
                    && !w.ends_with("gb")
                    && !w.starts_with("hbm")
                    && !w.starts_with("sxm")
            })
            .collect::<Vec<_>>()
            .join("-");
        let gib = (gpu.memory_total_bytes as f64 / (1u64 << 30) as f64).round() as u64;
        let model = if model.is_empty() {
            "gpu".to_owned()
        } else {
            model
        };
        return format!("nvidia-{model}-{gib}gb-x{}", facts.gpus.len());
    }
    const NOISE: [&str; 6] = ["r", "tm", "cpu", "processor", "core", "with"];
    let words: Vec<String> = slug(&facts.cpu_model)
        .split('-')
        .take_while(|w| !w.ends_with("ghz"))
        .filter(|w| !NOISE.contains(w) && !w.is_empty())
        .take(4)
        .map(str::to_owned)
        .collect();
    let model = if words.is_empty() {
        "unknown".to_owned()
    } else {
        words.join("-")
    };
    format!("cpu-{model}-{}c", facts.cpu_cores)
}

/// Threshold keys for a fleet metric key, most specific first: `<agent>/<runtime>.<metric>`,
/// then `<hardware_class>/<runtime>.<metric>`, then the plain `<runtime>.<metric>`. A plain key
/// resolves only to itself.
pub fn threshold_candidates(
    metric_key: &str,
    class_of: impl Fn(&str) -> Option<String>,
) -> Vec<String> {
    match metric_key.split_once('/') {
        Some((agent, rest)) => {
            // A per-GPU instance (`<runtime>@<gpu>.<metric>`) also takes its runtime's keys.
            let base = strip_instance(rest);
            let mut keys = vec![metric_key.to_owned()];
            if base != rest {
                keys.push(format!("{agent}/{base}"));
            }
            if let Some(class) = class_of(agent) {
                keys.push(format!("{class}/{base}"));
            }
            keys.push(base);
            keys
        }
        None => vec![strip_instance(metric_key)],
    }
}

/// `<runtime>@<gpu>.<metric>` → `<runtime>.<metric>`, `<runtime>@<gpu>` → `<runtime>`
/// (anything else unchanged).
pub fn strip_instance(key: &str) -> String {
    match key.split_once('@') {
        Some((runtime, after)) => match after.split_once('.') {
            Some((_, metric)) => format!("{runtime}.{metric}"),
            None => runtime.to_owned(),
        },
        None => key.to_owned(),
    }
}

/// How an agent's part of the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// Every job delivered its report.
    Completed,
    /// The agent stopped heartbeating (or its connection dropped) and did not come back in time.
    Lost,
    /// A job passed the run's deadline.
    TimedOut,
    /// A job's worker failed.
    Failed,
}

/// How one job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Still running (only while the run is in progress).
    Running,
    /// Its report arrived.
    Completed,
    /// Its worker failed.
    Failed,
    /// The deadline passed.
    TimedOut,
    /// Its agent was lost.
    Lost,
    /// Cancelled.
    Cancelled,
}

/// One job in an agent's section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    /// Job id.
    pub job_id: String,
    /// How it ended.
    pub status: JobStatus,
    /// The last phase it reported.
    pub phase: String,
    /// Progress within that phase.
    pub done: u64,
    /// Units in that phase.
    pub total: u64,
    /// Events received (each once: resent duplicates are not counted).
    pub events: u64,
    /// RSS checkpoints received from the soak.
    pub checkpoints: u64,
    /// Seconds from dispatch to the end.
    pub wall_seconds: f64,
    /// Why it did not complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An agent's section of the fleet report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSection {
    /// Hardware class (derived, or the operator's label).
    pub hardware_class: String,
    /// Operator labels.
    pub labels: BTreeMap<String, String>,
    /// Host facts.
    pub facts: HostFacts,
    /// How its part ended.
    pub status: AgentStatus,
    /// Its jobs, by runtime.
    pub jobs: BTreeMap<String, JobSummary>,
}

/// Worst and median of one metric over a hardware class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricSpread {
    /// Largest value (every gated metric is better when lower).
    pub worst: f64,
    /// Median value.
    pub median: f64,
    /// Agents that produced it.
    pub agents: u64,
}

/// A hardware class's summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassSummary {
    /// Agents of the class.
    pub agents: Vec<String>,
    /// `<runtime>.<metric>` → worst and median over the class's agents.
    pub metrics: BTreeMap<String, MetricSpread>,
}

/// The fleet's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every check passed on every agent.
    Pass,
    /// A check failed (or a diagnostic was raised) with every agent accounted for.
    Fail,
    /// An agent was lost, timed out or failed, or a required runtime was unavailable: the
    /// run proves nothing either way.
    Inconclusive,
}

impl Verdict {
    /// The verdict's name.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// Where a job is: the phase a worker reports with its progress, and the phase a failed job
/// reached. Its name (`starting`, `overhead`, `soak`, `retention_validation`, `unknown`) is what
/// a worker writes, what a client sees in a run's progress and what a report says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobPhase {
    /// Assigned, the worker not yet reporting progress.
    #[default]
    Starting,
    /// Overhead pairs (done/total count scenarios: 2 per pair; the total grows with the pairs
    /// beyond the minimum).
    Overhead,
    /// The soak (done/total count samples).
    Soak,
    /// The forced-churn subtest (done/total count samples).
    RetentionValidation,
    /// A phase this build does not know (an unspecified wire value, a newer worker's name).
    #[serde(other)]
    Unknown,
}

impl JobPhase {
    /// The phase's name.
    pub fn name(self) -> &'static str {
        match self {
            JobPhase::Starting => "starting",
            JobPhase::Overhead => "overhead",
            JobPhase::Soak => "soak",
            JobPhase::RetentionValidation => "retention_validation",
            JobPhase::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for JobPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl From<&str> for JobPhase {
    /// The phase named `name`; [`JobPhase::Unknown`] for any other name.
    fn from(name: &str) -> Self {
        match name {
            "starting" => JobPhase::Starting,
            "overhead" => JobPhase::Overhead,
            "soak" => JobPhase::Soak,
            "retention_validation" => JobPhase::RetentionValidation,
            _ => JobPhase::Unknown,
        }
    }
}

/// Whether the coordinator hears from an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Its messages arrive (heartbeats at least) within the heartbeat expiry.
    Connected,
    /// It went silent past the heartbeat expiry; its session was closed.
    Lost,
}

/// One update of a running job, as a worker writes it (one JSON line each) and as the agent
/// forwards it to the coordinator (a numbered `JobEvent`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobUpdate {
    /// The worker process started.
    Started {
        /// Its pid.
        pid: u32,
    },
    /// Progress within a phase.
    Progress {
        /// The phase.
        phase: JobPhase,
        /// Units done.
        done: u64,
        /// Units in the phase.
        total: u64,
    },
    /// An RSS checkpoint of the soak.
    Checkpoint {
        /// Sample index.
        sample_index: u64,
        /// RSS in bytes.
        rss_bytes: u64,
    },
    /// The job's report section. Terminal.
    Report {
        /// The section.
        section: Box<crate::report::RuntimeSection>,
    },
    /// The job failed. Terminal.
    Failed {
        /// The phase it reached.
        phase: JobPhase,
        /// Why.
        reason: String,
    },
}

impl JobUpdate {
    /// Whether nothing follows this update.
    pub fn is_terminal(&self) -> bool {
        matches!(self, JobUpdate::Report { .. } | JobUpdate::Failed { .. })
    }
}

/// Per-class worst and median of every `<agent>/<runtime>.<metric>` value.
pub fn class_summaries(
    agents: &BTreeMap<String, AgentSection>,
    metrics: &BTreeMap<String, f64>,
) -> BTreeMap<String, ClassSummary> {
    let mut classes: BTreeMap<String, ClassSummary> = BTreeMap::new();
    for (id, agent) in agents {
        classes
            .entry(agent.hardware_class.clone())
            .or_insert_with(|| ClassSummary {
                agents: Vec::new(),
                metrics: BTreeMap::new(),
            })
            .agents
            .push(id.clone());
    }
    let mut values: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for (key, &value) in metrics {
        let Some((agent, rest)) = key.split_once('/') else {
            continue;
        };
        let Some(section) = agents.get(agent) else {
            continue;
        };
        values
            .entry((section.hardware_class.clone(), strip_instance(rest)))
            .or_default()
            .push(value);
    }
    for ((class, metric), mut v) in values {
        v.sort_by(f64::total_cmp);
        let median = if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        if let Some(summary) = classes.get_mut(&class) {
            summary.metrics.insert(
                metric,
                MetricSpread {
                    worst: v[v.len() - 1],
                    median,
                    agents: v.len() as u64,
                },
            );
        }
    }
    classes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(name: &str, gib: u64) -> GpuFacts {
        GpuFacts {
            index: 0,
            name: name.into(),
            uuid: "GPU-1".into(),
            pci_bus_id: "0000:01:00.0".into(),
            memory_total_bytes: gib << 30,
            driver_version: "550".into(),
            cuda_driver_version: "12.4".into(),
        }
    }

    #[test]
    fn hardware_classes_name_model_memory_and_count() {
        let mut facts = HostFacts {
            cpu_model: "AMD EPYC 7763 64-Core Processor".into(),
            cpu_cores: 2,
            ..HostFacts::default()
        };
        assert_eq!(derive_hardware_class(&facts), "cpu-amd-epyc-7763-64-2c");
        facts.cpu_model = "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz".into();
        facts.cpu_cores = 16;
        assert_eq!(
            derive_hardware_class(&facts),
            "cpu-intel-xeon-platinum-8375c-16c"
        );
        facts.gpus = vec![gpu("NVIDIA H100 80GB HBM3", 80); 8];
        assert_eq!(derive_hardware_class(&facts), "nvidia-h100-80gb-x8");
        facts.gpus = vec![gpu("NVIDIA A10G", 22)];
        assert_eq!(derive_hardware_class(&facts), "nvidia-a10g-22gb-x1");
        facts.gpus = vec![];
        facts.cpu_model = String::new();
        assert_eq!(derive_hardware_class(&facts), "cpu-unknown-16c");
    }

    #[test]
    fn thresholds_resolve_most_specific_first() {
        let class = |agent: &str| (agent == "a1").then(|| "cpu-x-2c".to_owned());
        assert_eq!(
            threshold_candidates("a1/rt.m", class),
            ["a1/rt.m", "cpu-x-2c/rt.m", "rt.m"]
        );
        assert_eq!(threshold_candidates("a2/rt.m", class), ["a2/rt.m", "rt.m"]);
        assert_eq!(threshold_candidates("rt.m", class), ["rt.m"]);
        assert_eq!(
            threshold_candidates("a1/cuda@1.m", class),
            ["a1/cuda@1.m", "a1/cuda.m", "cpu-x-2c/cuda.m", "cuda.m"]
        );
    }

    #[test]
    fn class_summary_takes_worst_and_median() {
        let section = |class: &str| AgentSection {
            hardware_class: class.into(),
            labels: BTreeMap::new(),
            facts: HostFacts::default(),
            status: AgentStatus::Completed,
            jobs: BTreeMap::new(),
        };
        let agents = BTreeMap::from([
            ("a".to_owned(), section("c1")),
            ("b".to_owned(), section("c1")),
            ("c".to_owned(), section("c1")),
            ("d".to_owned(), section("c2")),
        ]);
        let metrics = BTreeMap::from([
            ("a/rt.m".to_owned(), 1.0),
            ("b/rt.m".to_owned(), 5.0),
            ("c/rt.m".to_owned(), 3.0),
            ("d/rt.m".to_owned(), 7.0),
        ]);
        let s = class_summaries(&agents, &metrics);
        assert_eq!(s["c1"].agents, ["a", "b", "c"]);
        assert_eq!(
            s["c1"].metrics["rt.m"],
            MetricSpread {
                worst: 5.0,
                median: 3.0,
                agents: 3
            }
        );
        assert_eq!(s["c2"].metrics["rt.m"].worst, 7.0);
    }

    #[test]
    fn phases_keep_their_names_and_an_unknown_one_reads_as_unknown() {
        for phase in [
            JobPhase::Starting,
            JobPhase::Overhead,
            JobPhase::Soak,
            JobPhase::RetentionValidation,
            JobPhase::Unknown,
        ] {
            let json = serde_json::to_string(&phase).unwrap();
            assert_eq!(json, format!("\"{}\"", phase.name()));
            assert_eq!(serde_json::from_str::<JobPhase>(&json).unwrap(), phase);
            assert_eq!(JobPhase::from(phase.name()), phase);
        }
        assert_eq!(
            serde_json::from_str::<JobPhase>("\"warmup\"").unwrap(),
            JobPhase::Unknown
        );
        assert_eq!(JobPhase::from("warmup"), JobPhase::Unknown);
        let line = r#"{"event":"failed","phase":"soak","reason":"x"}"#;
        assert_eq!(
            serde_json::from_str::<JobUpdate>(line).unwrap(),
            JobUpdate::Failed {
                phase: JobPhase::Soak,
                reason: "x".into()
            }
        );
    }
}
