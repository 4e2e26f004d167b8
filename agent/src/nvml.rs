//! NVML through `nvml-wrapper`, for GPU facts and the `gpumemprof_cuda` runtime.
//!
//! The library is loaded once per process (`libnvidia-ml.so.1`, or the file named by
//! `FLEETGATE_NVML_LIBRARY` — tests point it at the NVML stand-in). A host without the library
//! or without devices has "no GPUs" with the loader's reason; nothing here panics or crashes.

use std::ffi::OsStr;
use std::sync::{Arc, OnceLock};

use fleetgate_common::host::GpuFacts;
use nvml_wrapper::Nvml;
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;

use crate::collector::{CollectError, Collector, CollectorInfo};
use crate::record::Reading;

/// Environment variable naming the NVML library to load instead of `libnvidia-ml.so.1`.
pub const NVML_LIBRARY_ENV: &str = "FLEETGATE_NVML_LIBRARY";

/// Why NVML did not load (the same error for every use in the process).
#[derive(Debug, Clone, thiserror::Error)]
#[error("NVML did not load ({library}): {source}")]
pub struct NvmlLoadError {
    /// The library file asked for.
    pub library: String,
    /// The loader's reason.
    #[source]
    pub source: Arc<NvmlError>,
}

/// Why [`gpu_facts`] found no GPUs.
#[derive(Debug, thiserror::Error)]
pub enum GpuFactsError {
    /// NVML did not load.
    #[error(transparent)]
    Load(#[from] NvmlLoadError),
    /// A system-wide NVML query failed.
    #[error("NVML {what}: {source}")]
    Query {
        /// What was asked for.
        what: &'static str,
        /// NVML's error.
        #[source]
        source: NvmlError,
    },
    /// NVML works but lists no device.
    #[error("NVML loaded but sees no GPU")]
    NoGpu,
}

static NVML: OnceLock<Result<Nvml, NvmlLoadError>> = OnceLock::new();

/// This process's NVML, loaded on first use.
pub fn nvml() -> Result<&'static Nvml, NvmlLoadError> {
    NVML.get_or_init(|| {
        let path = std::env::var_os(NVML_LIBRARY_ENV);
        let mut builder = Nvml::builder();
        if let Some(path) = &path {
            builder.lib_path(path.as_os_str());
        }
        builder.init().map_err(|e| NvmlLoadError {
            library: path.as_deref().map_or_else(
                || "libnvidia-ml.so.1".to_owned(),
                |p| OsStr::to_string_lossy(p).into_owned(),
            ),
            source: Arc::new(e),
        })
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// The GPUs NVML sees, or why there are none.
pub fn gpu_facts() -> Result<Vec<GpuFacts>, GpuFactsError> {
    let nvml = nvml()?;
    let err = |what: &'static str, source: NvmlError| GpuFactsError::Query { what, source };
    let count = nvml.device_count().map_err(|e| err("device count", e))?;
    if count == 0 {
        return Err(GpuFactsError::NoGpu);
    }
    let driver = nvml.sys_driver_version().unwrap_or_default();
    let cuda = nvml
        .sys_cuda_driver_version()
        .map(|v| format!("{}.{}", v / 1_000, v % 1_000 / 10))
        .unwrap_or_default();
    // A GPU that does not answer (fallen off the bus, a transient error) is still listed, with
    // what could be read: its jobs then report the collector's failures.
    Ok((0..count)
        .map(|index| {
            let mut facts = GpuFacts {
                index,
                name: String::new(),
                uuid: String::new(),
                pci_bus_id: String::new(),
                memory_total_bytes: 0,
                driver_version: driver.clone(),
                cuda_driver_version: cuda.clone(),
            };
            match nvml.device_by_index(index) {
                Ok(device) => {
                    let warn = |what: &str, e: NvmlError| {
                        tracing::warn!(gpu = index, error = %e, "NVML {what} unavailable.");
                    };
                    device.name().map_or_else(|e| warn("name", e), |v| facts.name = v);
                    device.uuid().map_or_else(|e| warn("uuid", e), |v| facts.uuid = v);
                    device
                        .pci_info()
                        .map_or_else(|e| warn("PCI info", e), |p| facts.pci_bus_id = p.bus_id);
                    device
                        .memory_info()
                        .map_or_else(|e| warn("memory", e), |m| facts.memory_total_bytes = m.total);
                }
                Err(e) => tracing::warn!(gpu = index, error = %err("device", e), "GPU listed without facts."),
            }
            facts
        })
        .collect())
}

/// The `gpumemprof_cuda` collector: one GPU's used, free and total memory, and the GPU memory
/// of this process (its running compute and graphics processes).
#[derive(Debug)]
pub struct NvmlCollector {
    index: u32,
    pid: u32,
}

impl NvmlCollector {
    /// Checks that GPU `index` exists (without reading its memory).
    pub fn open(index: u32) -> Result<Self, CollectError> {
        let nvml = nvml().map_err(|e| CollectError::Unavailable(e.to_string()))?;
        let count = nvml
            .device_count()
            .map_err(|e| CollectError::Unavailable(format!("NVML device count: {e}")))?;
        if count == 0 {
            return Err(CollectError::Unavailable(
                "NVML loaded but sees no GPU".into(),
            ));
        }
        if index >= count {
            return Err(CollectError::Unavailable(format!(
                "GPU {index} does not exist (NVML sees {count})"
            )));
        }
        Ok(NvmlCollector {
            index,
            pid: std::process::id(),
        })
    }
}

fn nvml_error(error: NvmlError) -> CollectError {
    CollectError::Malformed {
        source_name: "nvml",
        message: error.to_string(),
    }
}

impl Collector for NvmlCollector {
    fn info(&self) -> CollectorInfo {
        CollectorInfo {
            collector: "fleetgate.cuda_tracker",
            backend: "cuda",
            sampling_source: "nvml",
            device_id: i64::from(self.index),
        }
    }

    fn read(&mut self) -> Result<Reading, CollectError> {
        let nvml = nvml().map_err(|e| CollectError::Unavailable(e.to_string()))?;
        let device = nvml.device_by_index(self.index).map_err(nvml_error)?;
        let memory = device.memory_info().map_err(nvml_error)?;
        // This process's GPU memory: a process can hold compute and graphics contexts.
        let mine: u64 = device
            .running_compute_processes()
            .map_err(nvml_error)?
            .into_iter()
            .chain(device.running_graphics_processes().map_err(nvml_error)?)
            .filter(|p| p.pid == self.pid)
            .map(|p| match p.used_gpu_memory {
                UsedGpuMemory::Used(bytes) => bytes,
                UsedGpuMemory::Unavailable => 0,
            })
            .sum();
        Ok(Reading {
            allocated_bytes: mine,
            reserved_bytes: mine,
            active_bytes: None,
            inactive_bytes: None,
            device_used_bytes: memory.used,
            device_free_bytes: Some(memory.free),
            device_total_bytes: Some(memory.total),
        })
    }
}
