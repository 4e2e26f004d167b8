//! The workloads of the overhead scenario.
//!
//! The reference workload (every runtime's default) is deterministic allocation churn. Each
//! step allocates a zeroed buffer of `allocation_kb` KiB, writes a marker
//! `(step × 17) mod 251` into the first byte of every 4 KiB page, adds each marker to a
//! checksum, then XORs the checksum with the buffer length. The buffer goes through
//! `black_box`, so the optimizer can neither skip the allocation nor the page writes.

//!
//! The TensorFlow workload (the TensorFlow runtimes, when asked for) runs `iterations` steps of
//! a real graph on the runtime's device: `sum(x · x)` for a square float matrix of about
//! `allocation_kb` KiB. A tracked run traces the step after which a sample is due, so the
//! collector reports the allocator statistics of the work it monitors.

use std::hint::black_box;

use fleetgate_common::config::WorkloadKind;

use crate::tensorflow::{TfError, TfWork};

const PAGE: usize = 4096;

/// Workload size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// Steps (at least 1 is run).
    pub iterations: u32,
    /// KiB per step (at least 1).
    pub allocation_kb: u32,
}

/// A workload ready to run (its set-up, such as building a TensorFlow graph, done outside the
/// timed region).
#[derive(Debug)]
pub enum PreparedWorkload {
    /// Allocation churn.
    Reference(Workload),
    /// TensorFlow graph steps.
    Tensorflow {
        /// Steps.
        iterations: u32,
        /// The graph and its session.
        work: TfWork,
    },
}

impl PreparedWorkload {
    /// Prepares `kind` on TensorFlow `device` (ignored by the reference workload).
    pub fn prepare(kind: WorkloadKind, size: Workload, device: &str) -> Result<Self, TfError> {
        match kind {
            WorkloadKind::Reference => Ok(PreparedWorkload::Reference(size)),
            WorkloadKind::Tensorflow => Ok(PreparedWorkload::Tensorflow {
                iterations: size.iterations,
                work: TfWork::open(device, size.allocation_kb)?,
            }),
        }
    }

    /// Steps it runs.
    pub fn steps(&self) -> u64 {
        match self {
            PreparedWorkload::Reference(w) => u64::from(w.iterations.max(1)),
            PreparedWorkload::Tensorflow { iterations, .. } => u64::from((*iterations).max(1)),
        }
    }

    /// Runs every step, tracing the TensorFlow steps for which `traced(step)` holds, and
    /// calling `after_step(step)` after each; returns the checksum (the reference workload's,
    /// or the number of TensorFlow steps run).
    pub fn run(
        &self,
        traced: impl Fn(u64) -> bool,
        after_step: impl FnMut(u64),
    ) -> Result<u64, TfError> {
        match self {
            PreparedWorkload::Reference(w) => Ok(w.run(after_step)),
            PreparedWorkload::Tensorflow { work, .. } => {
                let mut after_step = after_step;
                let steps = self.steps();
                for step in 0..steps {
                    work.run_step(traced(step))?;
                    after_step(step);
                }
                Ok(steps)
            }
        }
    }
}

impl Workload {
    /// Runs every step, calling `after_step(step)` after each; returns the checksum.
    pub fn run(&self, mut after_step: impl FnMut(u64)) -> u64 {
        let steps = u64::from(self.iterations.max(1));
        let len = self.allocation_kb.max(1) as usize * 1024;
        let mut checksum = 0u64;
        for step in 0..steps {
            let mut buf = black_box(vec![0u8; len]);
            let marker = ((step * 17) % 251) as u8;
            for page in (0..len).step_by(PAGE) {
                buf[page] = marker;
                checksum = checksum.wrapping_add(u64::from(marker));
            }
            checksum ^= len as u64;
            black_box(&buf);
            drop(buf);
            after_step(step);
        }
        checksum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_deterministic_and_depends_on_the_size() {
        let w = Workload {
            iterations: 3,
            allocation_kb: 8,
        };
        // Step markers 0, 17, 34 on 2 pages each, XOR 8192 after every step (0 ^ 8192 first).
        let expected = (((8192u64 + 34) ^ 8192) + 68) ^ 8192;
        assert_eq!(w.run(|_| {}), expected);
        let mut steps = Vec::new();
        w.run(|s| steps.push(s));
        assert_eq!(steps, [0, 1, 2]);
        assert_ne!(
            Workload {
                iterations: 3,
                allocation_kb: 12
            }
            .run(|_| {}),
            expected
        );
    }
}
