//! Host facts and runtime availability, as an agent reports them when it registers.

use fleetgate_common::host::{HostFacts, RuntimeAvailability};

use fleetgate_common::runtime::RuntimeKind;

/// Reads the host's facts once (sysinfo; no per-sample use).
pub fn host_facts() -> HostFacts {
    let mut facts = HostFacts {
        hostname: sysinfo::System::host_name()
            .unwrap_or_else(|_| fleetgate_common::host::host_name()),
        os: sysinfo::System::long_os_version().unwrap_or_else(|_| std::env::consts::OS.to_owned()),
        kernel: sysinfo::System::kernel_version().unwrap_or_default(),
        gpu_unavailable_reason: None,
        tensorflow_available: false,
        tensorflow_unavailable_reason: Some("not probed yet".to_owned()),
        ..HostFacts::default()
    };
    match sysinfo::System::new() {
        Ok(mut sys) => {
            sys.refresh_memory();
            sys.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
            facts.memory_total_bytes = sys.total_memory();
            facts.cpu_cores = u32::try_from(sys.cpus().len()).unwrap_or(u32::MAX);
            facts.cpu_model = sys
                .cpus()
                .first()
                .map(|c| c.brand().trim().to_owned())
                .unwrap_or_default();
        }
        Err(err) => tracing::warn!(error = %err, "Host facts unavailable from sysinfo."),
    }
    match crate::nvml::gpu_facts() {
        Ok(gpus) => facts.gpus = gpus,
        Err(reason) => facts.gpu_unavailable_reason = Some(reason.to_string()),
    }
    facts
}

/// Whether each runtime can run here, and why not, checked in this process. TensorFlow
/// runtimes are only checked for the library's presence here (loading it costs ~300 MB of
/// RSS); agents run [`crate::worker::probe_with_worker`] for the full check.
pub fn runtime_availability() -> Vec<RuntimeAvailability> {
    RuntimeKind::ALL
        .iter()
        .map(|&kind| {
            let result = if kind.uses_tensorflow() {
                crate::tensorflow::library_present()
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            } else {
                crate::runtime::open_collector(kind, 1, 0)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            };
            RuntimeAvailability {
                runtime: kind.name().to_owned(),
                available: result.is_ok(),
                reason: result.err(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_describe_this_host() {
        let facts = host_facts();
        assert!(!facts.hostname.is_empty());
        assert!(facts.cpu_cores >= 1);
        assert!(facts.memory_total_bytes > 0);
        let runtimes = runtime_availability();
        assert!(
            runtimes
                .iter()
                .any(|r| r.runtime == "gpumemprof_cpu" && r.available)
        );
    }
}
