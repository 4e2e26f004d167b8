//! A run as a client asks for it ([`RunSpec`]): the workload, the runtimes and their knobs,
//! which agents, the gate and its assets. The coordinator validates it into a plan.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::config::{GateMode, Workload};
use crate::gate::AssetSource;
use crate::knobs::Knobs;

/// A gate asset as used by a run: its name (the file path), its JSON text, and where it came
/// from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    /// File path, for messages and the report (for a built-in asset, the shipped file's path).
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// A file, or the copy built into this binary.
    pub source: AssetSource,
}

/// A gate asset file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {what} cannot be read: {}", crate::input::one_line(.name), crate::input::one_line(.reason))]
pub struct AssetReadError {
    /// The file.
    pub name: String,
    /// What it is (`Budget file`, `Baseline file`, `Tolerance file`).
    pub what: &'static str,
    /// Why.
    pub reason: String,
}

impl Asset {
    /// Reads a file; the error names the file.
    pub fn read(path: &Path, what: &'static str) -> Result<Self, AssetReadError> {
        let name = path.display().to_string();
        match crate::input::read_file(path) {
            Ok(bytes) => Ok(Asset {
                name,
                bytes,
                source: AssetSource::Path,
            }),
            Err(e) => Err(AssetReadError {
                name,
                what,
                reason: e.to_string(),
            }),
        }
    }

    /// The built-in copy of a shipped file.
    pub fn embedded(name: &str, bytes: &[u8]) -> Self {
        Asset {
            name: name.to_owned(),
            bytes: bytes.to_vec(),
            source: AssetSource::Embedded,
        }
    }

    /// How messages name it: the path, marked when the copy is built in.
    pub fn label(&self) -> String {
        match self.source {
            AssetSource::Path => self.name.clone(),
            AssetSource::Embedded => format!("{} (built in)", self.name),
        }
    }
}

/// Which agents a run selects. Every constraint given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Agent ids (empty: any).
    pub agent_ids: Vec<String>,
    /// Labels the agent must carry.
    pub labels: BTreeMap<String, String>,
    /// Hardware class the agent must be in.
    pub hardware_class: Option<String>,
    /// Fewest agents the run accepts.
    pub min_agents: u32,
}

/// A run as a client asks for it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    /// Profile, scenarios and workload.
    pub workload: Workload,
    /// Gate.
    pub gate_mode: GateMode,
    /// Runtime names, in run order.
    pub runtimes: Vec<String>,
    /// Agent selection.
    pub selection: Selection,
    /// Whole-run deadline (None: the coordinator's default for the profile).
    pub deadline: Option<Duration>,
    /// Tuning knobs.
    pub knobs: Knobs,
    /// RAM-backed root for overhead trial files on the agents' hosts.
    pub overhead_scratch_root: Option<String>,
    /// Budget file (budget gate); None: the coordinator's built-in copy of the shipped one.
    pub budgets: Option<Asset>,
    /// Baseline file (regression gate); None: the built-in copy (`pr` only).
    pub baseline: Option<Asset>,
    /// Tolerance file (regression gate); None: the built-in copy (`pr` only).
    pub tolerances: Option<Asset>,
}
