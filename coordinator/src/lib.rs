//! The fleetgate coordinator and the `fleetgate` CLI that CI calls.
//!
//! A run is validated ([`plan`]), dispatched by the coordinator's [`registry`] to agents over
//! gRPC ([`service`]), and its jobs' sections are aggregated into one gated fleet report
//! ([`fleetgate_common::report::build_report`]); the CLI submits runs and follows them
//! ([`client`]; a report of any size travels in chunks, [`report_stream`]) and renders the
//! console summary, Markdown and JUnit files ([`output`]) and the HTML report ([`html`]).
//! [`history`] keeps every report in a SQLite file and finds change points in a metric's
//! series. [`cli`] is the `fleetgate` command line.

pub mod cli;
pub mod client;
pub mod history;
pub mod html;
pub mod identity;
pub mod metrics;
pub mod output;
pub mod plan;
pub mod registry;
pub mod report_stream;
pub mod service;
