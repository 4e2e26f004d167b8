//! An NVML stand-in for tests: a shared library, compiled from `standin.c`, that exports the
//! NVML functions fleetgate calls and simulates GPUs (count, name, memory, the calling process's
//! usage) with injectable failures, configured through environment variables and a control
//! file (see `standin.c`). Tests load it with nvml-wrapper's library-path option by setting
//! `FLEETGATE_NVML_LIBRARY` to [`LIBRARY`].

/// Path of the built stand-in library.
pub const LIBRARY: &str = env!("NVML_STANDIN_LIBRARY");
