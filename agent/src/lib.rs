//! The fleetgate agent: native re-implementations of always-on memory monitors (the
//! runtimes), the append-only telemetry sink they write to, the scenarios the harness runs on
//! them, and the process that runs jobs.
//!
//! Data flows one way: a [`collector`] reading goes through the [`health`] state machine into
//! a [`runtime::Tracker`], which keeps [`history`] rings and hands each [`record`] to the
//! [`sink`] (whose writer thread encodes the samples); a [`scenario`] drives trackers (and the reference [`workload`]) and summarises
//! what they did; a [`job`] runs one runtime's scenarios into its report section.
//!
//! The [`daemon`] takes jobs from a coordinator and runs each in a [`worker`] process; [`cli`]
//! is the `fleetgate-agent` command line.

pub mod cli;
pub mod collector;
pub mod daemon;
pub mod facts;
pub mod health;
pub mod history;
pub mod job;
pub mod nvml;
pub mod record;
pub mod runtime;
pub mod scenario;
pub mod sink;
pub mod tensorflow;
pub mod worker;
pub mod workload;
