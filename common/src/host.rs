//! What an agent knows about its host: its name, its facts, the runtimes it can run, and the
//! hardware class derived from them.

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

/// This host's name (from `uname`), or `unknown`.
pub fn host_name() -> String {
    let name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    if name.is_empty() {
        "unknown".to_owned()
    } else {
        name
    }
}

/// The hardware class derived from host facts: GPU hosts by model, memory and count (eight
/// `NVIDIA H100 80GB HBM3`: `nvidia-h100-80gb-x8`), CPU hosts by the first words of the CPU
/// model and the logical cores (`AMD EPYC 7763 64-Core Processor` with 2 cores:
/// `cpu-amd-epyc-7763-64-2c`).
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
}
