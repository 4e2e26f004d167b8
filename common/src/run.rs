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

/// The share of a hardware class's agents that must pass for the class to pass: a fraction
/// greater than 0 and at most 1. [`Quorum::ALL`] (1, the default) requires every agent, which
/// is the verdict without a quorum.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Quorum(f64);

// Never NaN: a quorum is only made by `Quorum::new`, which refuses it.
impl Eq for Quorum {}

/// A quorum outside (0, 1], or not a number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be a fraction greater than 0 and at most 1 (1: every agent of a class), got {got}")]
pub struct QuorumError {
    /// The value given, as text.
    pub got: String,
}

impl Quorum {
    /// Every agent of a class must pass.
    pub const ALL: Quorum = Quorum(1.0);

    /// A quorum of `fraction`, which must be greater than 0 and at most 1 (NaN is refused).
    pub fn new(fraction: f64) -> Result<Self, QuorumError> {
        if fraction > 0.0 && fraction <= 1.0 {
            Ok(Quorum(fraction))
        } else {
            Err(QuorumError {
                got: fraction.to_string(),
            })
        }
    }

    /// The fraction.
    pub fn fraction(self) -> f64 {
        self.0
    }

    /// Agents of a class of `agents` that must pass: `ceil(q × agents)`, at least 1 and at
    /// most `agents` (0 for an empty class).
    pub fn required(self, agents: usize) -> usize {
        if agents == 0 {
            return 0;
        }
        // `q × n` in floating point can land a hair above the integer it means (0.9 is not
        // exactly 9/10); a tolerance far below 1/n keeps the ceiling exact for any class size.
        let share = (self.0 * agents as f64 - 1e-9).ceil();
        (share as usize).clamp(1, agents)
    }
}

impl Default for Quorum {
    fn default() -> Self {
        Quorum::ALL
    }
}

impl std::fmt::Display for Quorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for Quorum {
    type Err = QuorumError;

    fn from_str(text: &str) -> Result<Self, QuorumError> {
        let fraction: f64 = text.trim().parse().map_err(|_| QuorumError {
            got: text.to_owned(),
        })?;
        Quorum::new(fraction).map_err(|_| QuorumError {
            got: text.to_owned(),
        })
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
    /// Share of each hardware class's agents that must pass for the fleet to pass.
    pub quorum: Quorum,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quorum_is_a_fraction_in_zero_one_and_rounds_up() {
        assert_eq!(Quorum::default(), Quorum::ALL);
        assert_eq!(Quorum::new(1.0), Ok(Quorum::ALL));
        for bad in [0.0, -0.5, 1.000_001, f64::NAN, f64::INFINITY] {
            assert!(Quorum::new(bad).is_err(), "{bad}");
        }
        assert_eq!(
            "1.5".parse::<Quorum>().unwrap_err().to_string(),
            "must be a fraction greater than 0 and at most 1 (1: every agent of a class), got 1.5"
        );
        assert_eq!("nine".parse::<Quorum>().unwrap_err().got, "nine");
        assert_eq!("NaN".parse::<Quorum>().unwrap_err().got, "NaN");
        assert_eq!("0.9".parse::<Quorum>().unwrap().fraction(), 0.9);

        let q = |f: f64| Quorum::new(f).unwrap();
        assert_eq!(q(0.9).required(10), 9);
        assert_eq!(q(0.9).required(11), 10);
        assert_eq!(q(0.7).required(10), 7);
        assert_eq!(q(0.3).required(10), 3);
        assert_eq!(q(0.1).required(30), 3);
        assert_eq!(q(0.5).required(3), 2);
        assert_eq!(q(1e-9).required(5), 1);
        assert_eq!(Quorum::ALL.required(7), 7);
        assert_eq!(Quorum::ALL.required(0), 0);
        // Every tenth and hundredth of every class up to 200 agents: the exact ceiling.
        for n in 1..=200_usize {
            for hundredths in 1..=100_usize {
                let exact = (hundredths * n).div_ceil(100);
                assert_eq!(
                    q(hundredths as f64 / 100.0).required(n),
                    exact,
                    "{hundredths}% of {n}"
                );
            }
        }
    }
}
