//! TensorFlow for the `tfmemprof` runtimes: libtensorflow loaded at run time (so every binary
//! builds and starts without it), a small graph that is the process's TensorFlow work, and the
//! allocator statistics TensorFlow reports for it.
//!
//! The C API has no process-wide memory call, so the numbers come from a step run with
//! `RunOptions.trace_level = FULL_TRACE`: its `RunMetadata.step_stats` hold, per device and
//! node, the allocator's bytes in use and peak. The collector never runs a step per sample: it
//! reads the process RSS and the statistics of the last traced step of the TensorFlow work
//! (the warm-up step at open, then the TensorFlow workload's traced steps, if it runs one).
//!
//! libtensorflow is found in `TENSORFLOW_DIR`. Agents pass it to their workers, defaulting to
//! the folder `deploy/tensorflow/fetch-libtensorflow.sh` installs into.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, PoisonError};

use prost::Message;
use tensorflow::{
    DataType, Operation, Output, Scope, Session, SessionOptions, SessionRunArgs, Variable, ops,
};

use crate::collector::{CollectError, Collector, CollectorInfo, RssCollector};
use crate::record::Reading;

/// The libtensorflow version the fetch script installs.
pub const TENSORFLOW_VERSION: &str = "2.21.0";

/// Serialized `RunOptions { trace_level: FULL_TRACE }`.
const FULL_TRACE: [u8; 2] = [0x08, 0x03];

/// Why libtensorflow is not available to this process.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TfLoadError {
    /// No `libtensorflow.so` in the folder.
    #[error(
        "libtensorflow.so not found in {} (set TENSORFLOW_DIR, or run deploy/tensorflow/fetch-libtensorflow.sh)",
        dir.display()
    )]
    NotFound {
        /// The folder looked in.
        dir: PathBuf,
    },
    /// The library is in the default folder, but `TENSORFLOW_DIR` does not point at it.
    #[error(
        "TENSORFLOW_DIR is not set; the TensorFlow runtimes load libtensorflow from it (found one in {})",
        dir.display()
    )]
    DirNotSet {
        /// The folder the library was found in.
        dir: PathBuf,
    },
    /// The library is there but did not load.
    #[error("libtensorflow did not load from {}: {reason}", dir.display())]
    Load {
        /// The folder.
        dir: PathBuf,
        /// The loader's reason (it reports text only).
        reason: String,
    },
}

/// Why TensorFlow work could not be set up or run.
#[derive(Debug, thiserror::Error)]
pub enum TfError {
    /// libtensorflow is not available.
    #[error(transparent)]
    Load(#[from] TfLoadError),
    /// A TensorFlow call failed.
    #[error("{what}: {source}")]
    Status {
        /// What was being done (`graph`, `session`, `step`, …).
        what: &'static str,
        /// TensorFlow's status.
        #[source]
        source: tensorflow::Status,
    },
    /// TensorFlow does not list the device the work was placed on.
    #[error("TensorFlow lists no device {device}")]
    NoDevice {
        /// The device asked for.
        device: String,
    },
    /// A step's `RunMetadata` could not be decoded.
    #[error("RunMetadata: {0}")]
    RunMetadata(#[from] prost::DecodeError),
}

/// Where libtensorflow is looked for: `TENSORFLOW_DIR`, else the fetch script's cache folder.
pub fn tensorflow_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TENSORFLOW_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("FLEETGATE_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/fleetgate")))
        .unwrap_or_else(|| PathBuf::from("/var/cache/fleetgate"));
    cache.join(format!("tensorflow-{TENSORFLOW_VERSION}"))
}

/// Whether `libtensorflow.so` is present in [`tensorflow_dir`] (without loading it).
pub fn library_present() -> Result<PathBuf, TfLoadError> {
    let dir = tensorflow_dir();
    let lib = dir.join("libtensorflow.so");
    if lib.is_file() {
        Ok(dir)
    } else {
        Err(TfLoadError::NotFound { dir })
    }
}

static LOADED: OnceLock<Result<(), TfLoadError>> = OnceLock::new();

/// The statistics of the last traced step of any TensorFlow work in this process: what the
/// collector reports (the allocator is process-wide, so any traced step sees all of it).
static LATEST: Mutex<StepMemory> = Mutex::new(StepMemory {
    bytes_in_use: 0,
    peak_bytes: 0,
    live_bytes: 0,
});

fn latest() -> StepMemory {
    *LATEST.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Loads libtensorflow once per process. The library is taken from `TENSORFLOW_DIR`, which
/// must point at the folder found by [`library_present`] (workers get it from their agent).
pub fn load() -> Result<(), TfLoadError> {
    LOADED
        .get_or_init(|| {
            let dir = library_present()?;
            if std::env::var_os("TENSORFLOW_DIR").is_none() {
                return Err(TfLoadError::DirNotSet { dir });
            }
            tensorflow::library::load().map_err(|reason| TfLoadError::Load { dir, reason })
        })
        .clone()
}

/// TensorFlow's own memory figures from the last traced step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepMemory {
    /// Allocator bytes in use (the largest over the step's allocators on the device).
    pub bytes_in_use: u64,
    /// Allocator peak bytes.
    pub peak_bytes: u64,
    /// Bytes live at the end of the step.
    pub live_bytes: u64,
}

// The few RunMetadata fields we read, decoded with prost (TensorFlow's protos are not
// exported by the crate; field numbers are TensorFlow's).
#[derive(Clone, PartialEq, prost::Message)]
struct RunMetadata {
    #[prost(message, optional, tag = "1")]
    step_stats: Option<StepStats>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StepStats {
    #[prost(message, repeated, tag = "1")]
    dev_stats: Vec<DeviceStepStats>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct DeviceStepStats {
    #[prost(string, tag = "1")]
    device: String,
    #[prost(message, repeated, tag = "2")]
    node_stats: Vec<NodeExecStats>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NodeExecStats {
    #[prost(string, tag = "1")]
    node_name: String,
    #[prost(message, repeated, tag = "6")]
    memory: Vec<AllocatorMemoryUsed>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AllocatorMemoryUsed {
    #[prost(string, tag = "1")]
    allocator_name: String,
    #[prost(int64, tag = "2")]
    total_bytes: i64,
    #[prost(int64, tag = "3")]
    peak_bytes: i64,
    #[prost(int64, tag = "4")]
    live_bytes: i64,
    #[prost(int64, tag = "5")]
    allocator_bytes_in_use: i64,
}

/// The memory figures of a serialized `RunMetadata` for devices whose name contains
/// `device` (e.g. `CPU:0`, `GPU:1`).
pub fn step_memory(run_metadata: &[u8], device: &str) -> Result<StepMemory, TfError> {
    let metadata = RunMetadata::decode(run_metadata)?;
    let mut memory = StepMemory::default();
    let positive = |v: i64| u64::try_from(v).unwrap_or(0);
    for dev in metadata.step_stats.iter().flat_map(|s| &s.dev_stats) {
        if !dev.device.contains(device) {
            continue;
        }
        for used in dev.node_stats.iter().flat_map(|n| &n.memory) {
            memory.bytes_in_use = memory
                .bytes_in_use
                .max(positive(used.allocator_bytes_in_use));
            memory.peak_bytes = memory.peak_bytes.max(positive(used.peak_bytes));
            memory.live_bytes = memory.live_bytes.max(positive(used.live_bytes));
        }
    }
    Ok(memory)
}

/// The process's TensorFlow work: a square float matrix variable of about `allocation_kb`
/// KiB and one step `sum(x · x)` on one device.
pub struct TfWork {
    session: Session,
    step: Operation,
    device: String,
    device_memory_bytes: Option<u64>,
}

impl std::fmt::Debug for TfWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TfWork")
            .field("device", &self.device)
            .field("device_memory_bytes", &self.device_memory_bytes)
            .finish_non_exhaustive()
    }
}

fn tf_err(what: &'static str) -> impl Fn(tensorflow::Status) -> TfError {
    move |source| TfError::Status { what, source }
}

/// GPUs TensorFlow lists, as `(device name, memory bytes)`.
pub fn list_gpus() -> Result<Vec<(String, u64)>, TfError> {
    load()?;
    let scope = Scope::new_root_scope();
    let session =
        Session::new(&SessionOptions::new(), &scope.graph()).map_err(tf_err("session"))?;
    Ok(session
        .device_list()
        .map_err(tf_err("device list"))?
        .into_iter()
        .filter(|d| d.device_type == "GPU")
        .map(|d| (d.name, u64::try_from(d.memory_bytes).unwrap_or(0)))
        .collect())
}

impl TfWork {
    /// Builds the graph on `device` (`/CPU:0`, `/GPU:0`, …), initialises it and runs one traced
    /// warm-up step, so RSS baselines are taken after TensorFlow is loaded and warm.
    pub fn open(device: &str, allocation_kb: u32) -> Result<Self, TfError> {
        load()?;
        let n = ((f64::from(allocation_kb.max(1)) * 1024.0 / 4.0)
            .sqrt()
            .ceil() as i32)
            .max(2);
        let root = Scope::new_root_scope();
        let mut scope = root.with_device(device);
        let shape = ops::constant(&[n, n][..], &mut scope).map_err(tf_err("graph"))?;
        let init = ops::RandomUniform::new()
            .dtype(DataType::Float)
            .build(shape, &mut scope.with_op_name("fleetgate_init"))
            .map_err(tf_err("graph"))?;
        let x = Variable::builder()
            .initial_value(init)
            .data_type(DataType::Float)
            .shape([i64::from(n), i64::from(n)])
            .build(&mut scope.with_op_name("fleetgate_x"))
            .map_err(tf_err("graph"))?;
        let product: Output = ops::mat_mul(
            x.output().clone(),
            x.output().clone(),
            &mut scope.with_op_name("fleetgate_xx"),
        )
        .map_err(tf_err("graph"))?
        .into();
        let axes = ops::constant(&[0i32, 1][..], &mut scope).map_err(tf_err("graph"))?;
        let step = ops::sum(product, axes, &mut scope.with_op_name("fleetgate_step"))
            .map_err(tf_err("graph"))?;
        let session =
            Session::new(&SessionOptions::new(), &root.graph()).map_err(tf_err("session"))?;
        let mut args = SessionRunArgs::new();
        args.add_target(x.initializer());
        session.run(&mut args).map_err(tf_err("initialise"))?;
        let wanted = device.trim_start_matches('/').to_ascii_uppercase();
        let device_memory_bytes = session
            .device_list()
            .map_err(tf_err("device list"))?
            .into_iter()
            .find(|d| d.name.to_ascii_uppercase().ends_with(&wanted))
            .map(|d| u64::try_from(d.memory_bytes).unwrap_or(0));
        if device_memory_bytes.is_none() {
            return Err(TfError::NoDevice {
                device: device.to_owned(),
            });
        }
        let work = TfWork {
            session,
            step,
            device: wanted,
            device_memory_bytes,
        };
        work.run_step(true)?;
        Ok(work)
    }

    /// Runs one step; a traced step refreshes the statistics the collector reports.
    pub fn run_step(&self, traced: bool) -> Result<(), TfError> {
        let mut args = SessionRunArgs::new();
        args.add_target(&self.step);
        if traced {
            args.set_run_options(&FULL_TRACE);
            args.set_request_metadata(true);
        }
        self.session.run(&mut args).map_err(tf_err("step"))?;
        if traced {
            let memory = step_memory(args.get_metadata().unwrap_or_default(), &self.device)?;
            *LATEST.lock().unwrap_or_else(PoisonError::into_inner) = memory;
        }
        Ok(())
    }

    /// The device's memory limit, as TensorFlow reports it.
    pub fn device_memory_bytes(&self) -> Option<u64> {
        self.device_memory_bytes
    }
}

/// The `tfmemprof` collector: process RSS plus TensorFlow's allocator statistics from the last
/// traced step of the process's TensorFlow work (its own warm-up step, then the workload's).
#[derive(Debug)]
pub struct TfCollector {
    rss: RssCollector,
    work: TfWork,
    device_id: i64,
}

impl TfCollector {
    /// Opens the TensorFlow work on `device` and the RSS reader.
    pub fn open(device: &str, allocation_kb: u32) -> Result<Self, CollectError> {
        let work = TfWork::open(device, allocation_kb)
            .map_err(|e| CollectError::Unavailable(e.to_string()))?;
        let device_id = if device.to_ascii_uppercase().contains("CPU") {
            -1
        } else {
            device
                .rsplit(':')
                .next()
                .and_then(|i| i.parse().ok())
                .unwrap_or(0)
        };
        Ok(TfCollector {
            rss: RssCollector::open()?,
            work,
            device_id,
        })
    }
}

impl Collector for TfCollector {
    fn info(&self) -> CollectorInfo {
        CollectorInfo {
            collector: "fleetgate.tensorflow.memory_tracker",
            backend: "tensorflow",
            sampling_source: "rss+tensorflow.step_stats",
            device_id: self.device_id,
        }
    }

    fn read(&mut self) -> Result<Reading, CollectError> {
        let rss = self.rss.rss_bytes()?;
        let tf = latest();
        Ok(Reading {
            allocated_bytes: tf.bytes_in_use,
            reserved_bytes: tf.peak_bytes,
            active_bytes: Some(tf.live_bytes),
            inactive_bytes: None,
            device_used_bytes: rss,
            device_free_bytes: None,
            device_total_bytes: self.work.device_memory_bytes(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_memory_takes_the_largest_figures_of_the_device() {
        let metadata = RunMetadata {
            step_stats: Some(StepStats {
                dev_stats: vec![
                    DeviceStepStats {
                        device: "/job:localhost/replica:0/task:0/device:CPU:0".into(),
                        node_stats: vec![NodeExecStats {
                            node_name: "a".into(),
                            memory: vec![
                                AllocatorMemoryUsed {
                                    allocator_name: "mklcpu".into(),
                                    total_bytes: 10,
                                    peak_bytes: 300,
                                    live_bytes: 20,
                                    allocator_bytes_in_use: 200,
                                },
                                AllocatorMemoryUsed {
                                    allocator_name: "cpu".into(),
                                    total_bytes: 1,
                                    peak_bytes: 100,
                                    live_bytes: 50,
                                    allocator_bytes_in_use: -1,
                                },
                            ],
                        }],
                    },
                    DeviceStepStats {
                        device: "/device:GPU:0".into(),
                        node_stats: vec![NodeExecStats {
                            node_name: "b".into(),
                            memory: vec![AllocatorMemoryUsed {
                                allocator_name: "gpu".into(),
                                total_bytes: 0,
                                peak_bytes: 9_999,
                                live_bytes: 0,
                                allocator_bytes_in_use: 9_999,
                            }],
                        }],
                    },
                ],
            }),
        };
        let bytes = metadata.encode_to_vec();
        assert_eq!(
            step_memory(&bytes, "CPU:0").unwrap(),
            StepMemory {
                bytes_in_use: 200,
                peak_bytes: 300,
                live_bytes: 50
            }
        );
        assert_eq!(step_memory(&bytes, "GPU:0").unwrap().bytes_in_use, 9_999);
        assert!(step_memory(&[0xff, 0xff], "CPU:0").is_err());
    }
}
