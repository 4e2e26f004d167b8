//! `fleetgate run` on this host: the accelerated soak of each selected runtime, one JSON
//! result document, and a console summary.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use fleetgate_agent::runtime::RuntimeKind;
use fleetgate_agent::scenario::{self, SoakResult, SoakSpec};
use serde::Serialize;

/// What to run.
#[derive(Debug, Clone)]
pub struct LocalRunConfig {
    /// `pr` or `nightly`.
    pub profile: &'static str,
    /// Equivalent hours of the profile.
    pub hours: f64,
    /// Runtimes to soak, in order.
    pub runtimes: Vec<RuntimeKind>,
    /// Root of the per-runtime artifact directories.
    pub artifact_root: PathBuf,
    /// Where the result document goes.
    pub output: PathBuf,
}

/// The result document.
#[derive(Debug, Serialize)]
pub struct LocalRunReport {
    /// Result format version.
    pub version: &'static str,
    /// Profile.
    pub profile: &'static str,
    /// Mode (only `soak` so far).
    pub mode: &'static str,
    /// Per runtime, in run order.
    pub runtimes: Vec<RuntimeSoak>,
}

/// One runtime's soak.
#[derive(Debug, Serialize)]
pub struct RuntimeSoak {
    /// Runtime name.
    pub runtime: &'static str,
    /// The soak's result.
    pub soak: SoakResult,
}

/// Runs every selected soak, writes the document to `config.output`, and returns it.
pub fn run(
    config: &LocalRunConfig,
    progress: &mut dyn FnMut(RuntimeKind, scenario::SoakProgress),
) -> anyhow::Result<LocalRunReport> {
    let mut runtimes = Vec::new();
    for &kind in &config.runtimes {
        let dir = config.artifact_root.join(kind.name()).join("soak");
        let spec = SoakSpec::new(kind, config.hours, &dir);
        let progress_every = (spec.samples / 50).max(1);
        let soak = scenario::run_soak(&spec, progress_every, &mut |p| progress(kind, p))
            .with_context(|| format!("{} soak", kind.name()))?;
        runtimes.push(RuntimeSoak {
            runtime: kind.name(),
            soak,
        });
    }
    let report = LocalRunReport {
        version: "fleetgate-soak-1",
        profile: config.profile,
        mode: "soak",
        runtimes,
    };
    write_json(&config.output, &report)?;
    Ok(report)
}

fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut json = serde_json::to_vec_pretty(value)?;
    json.push(b'\n');
    std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))
}

/// The console summary: one line per runtime.
pub fn summary_lines(report: &LocalRunReport) -> Vec<String> {
    report
        .runtimes
        .iter()
        .map(|r| {
            let s = &r.soak;
            format!(
                "{}: {} samples ({:.1} h-equivalent) in {:.2} s = {:.0} samples/s; \
                 rollovers={} pruned={} retained_files={} retained_bytes={} \
                 dropped_events={} collector_failures={} rss_growth_per_24h={:.0} \
                 max_rss_delta={} health={}",
                r.runtime,
                s.sample_count,
                s.equivalent_hours,
                s.wall_seconds,
                s.samples_per_second,
                s.stats.rollover_count,
                s.stats.pruned_segment_count,
                s.stats.final_retained_files,
                s.stats.final_retained_bytes,
                s.stats.history_dropped_events,
                s.stats.collector_failure_event_count,
                s.rss_growth_per_24h_equiv,
                s.max_rss_delta_bytes,
                s.stats.collector_health_status.as_str(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_run_writes_a_document_with_the_reference_counters() {
        let dir = tempfile::tempdir().unwrap();
        // 0.05 h at 0.1 s = 1,800 samples: 1,802 events, one segment, no rollover.
        let config = LocalRunConfig {
            profile: "pr",
            hours: 0.05,
            runtimes: vec![RuntimeKind::GpumemprofCpu],
            artifact_root: dir.path().join("artifacts"),
            output: dir.path().join("out/report.json"),
        };
        let mut calls = 0;
        let report = run(&config, &mut |_, _| calls += 1).unwrap();
        assert!(calls >= 50);
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&config.output).unwrap()).unwrap();
        let soak = &doc["runtimes"][0]["soak"];
        assert_eq!(soak["sample_count"], 1_800);
        assert_eq!(soak["stats"]["history_retained_events"], 1_802);
        assert_eq!(soak["stats"]["final_retained_files"], 1);
        assert_eq!(soak["rss_checkpoint_count"], 50);
        assert_eq!(soak["rss_warmup_sample_count"], 36);
        assert_eq!(summary_lines(&report).len(), 1);
        assert!(summary_lines(&report)[0].starts_with("gpumemprof_cpu: 1800 samples"));
    }
}
