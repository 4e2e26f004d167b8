//! Runtime benchmark: prints the figures of the monitoring runtimes (not a test; nothing here
//! asserts a time).
//!
//! ```text
//! cargo bench -p fleetgate-agent --bench runtime -- [--repeat N] [--samples 216000,864000]
//!     [--scratch DIR] [--reference] [--runtime gpumemprof_cpu|gpumemprof_cuda|tfmemprof_cpu]
//! ```
//!
//! Sections: the cost of each way to read RSS; the per-sample cost of `gpumemprof_cpu` in its
//! tracked default mode (sink on), beside the cost of the RSS reading alone timed in the same
//! loop; the added wall and CPU time per sample on the overhead scenario's workload (tracked
//! default mode against unprofiled, in the scenario's pairs); the sink's durability contract
//! alone (a write and an fdatasync per group of records, nothing else), the disk's part of that
//! added CPU time; soak throughput at the `pr` and `nightly` sample counts; and with
//! `--reference`, the Python reference (stormlog 0.4.3) driven the same way on the same sample
//! count, with the ratio.

#![expect(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fleetgate_agent::collector::RssCollector;
use fleetgate_agent::runtime::{Tracker, TrackerConfig, open_collector};
use fleetgate_common::runtime::RuntimeKind;
use std::sync::atomic::AtomicBool;

use fleetgate_agent::scenario::{
    self, Hooks, OverheadSpec, PairLimits, Progress, SoakSpec, equivalent_time,
};
use fleetgate_agent::workload::Workload;
use fleetgate_common::config::{RetentionValidationLimits, WorkloadKind, overhead_sample_count};
use fleetgate_common::knobs::DEFAULT_FLUSH_EVERY_EVENTS;

#[derive(Debug)]
struct Options {
    repeat: usize,
    samples: Vec<u64>,
    scratch: Option<PathBuf>,
    reference: bool,
    runtime: RuntimeKind,
}

fn options() -> Options {
    let mut o = Options {
        repeat: 5,
        samples: vec![216_000, 864_000],
        scratch: None,
        reference: false,
        runtime: RuntimeKind::GpumemprofCpu,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--repeat" => o.repeat = args.next().and_then(|v| v.parse().ok()).unwrap_or(5),
            "--samples" => {
                o.samples = args
                    .next()
                    .map(|v| v.split(',').filter_map(|s| s.parse().ok()).collect())
                    .unwrap_or_default();
            }
            "--scratch" => o.scratch = args.next().map(PathBuf::from),
            "--reference" => o.reference = true,
            "--runtime" => {
                o.runtime = args
                    .next()
                    .and_then(|v| RuntimeKind::from_name(&v))
                    .unwrap_or(RuntimeKind::GpumemprofCpu);
            }
            _ => {} // cargo passes --bench
        }
    }
    o.repeat = o.repeat.max(1);
    o
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn median_f(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Median ns per call of `f`, timed in blocks of 100 calls (the clock costs ~20 ns).
fn time_calls(mut f: impl FnMut(), blocks: usize) -> u64 {
    let mut per_call: Vec<u64> = (0..blocks)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..100 {
                f();
            }
            (start.elapsed().as_nanos() / 100) as u64
        })
        .collect();
    per_call.sort_unstable();
    percentile(&per_call, 0.5)
}

/// Prints the cost of each way to read RSS; returns the `pread` one (the one used).
fn rss_read_costs() -> u64 {
    println!("== RSS reading, median ns per reading ==");
    let mut pread = RssCollector::open().expect("open statm");
    let pread_ns = time_calls(|| drop(std::hint::black_box(pread.rss_bytes())), 200);
    println!("pread /proc/self/statm (open once, used):   {pread_ns:>8} ns");
    let mut buf = Vec::with_capacity(4096);
    let ns = time_calls(
        || {
            buf.clear();
            let mut f = File::open("/proc/self/statm").expect("statm");
            f.read_to_end(&mut buf).expect("read");
            std::hint::black_box(&buf);
        },
        100,
    );
    println!("open + read + close /proc/self/statm:       {ns:>8} ns");
    let ns = time_calls(
        || {
            buf.clear();
            let mut f = File::open("/proc/self/status").expect("status");
            f.read_to_end(&mut buf).expect("read");
            std::hint::black_box(&buf);
        },
        50,
    );
    println!("open + read + close /proc/self/status:      {ns:>8} ns");
    let pid = sysinfo::Pid::from_u32(std::process::id());
    let mut sys = sysinfo::System::new().expect("sysinfo");
    let ns = time_calls(
        || {
            sys.refresh_processes_specifics(
                sysinfo::ProcessesToUpdate::Some(&[pid]),
                false,
                sysinfo::ProcessRefreshKind::nothing().with_memory(),
            );
            std::hint::black_box(sys.process(pid).map(|p| p.memory()));
        },
        20,
    );
    println!("sysinfo refresh of this process (memory):   {ns:>8} ns");
    pread_ns
}

/// Times every `emit_sample` of a tracked session and, right after each, one `pread` RSS
/// reading on a collector of its own: the two medians come from the same loop, under the same
/// load, so their ratio is what tracking costs over the reading itself. `block_pread_ns` is
/// the `pread` cost of the RSS section (timed in blocks of 100, so without the clock's cost).
/// Returns the sink's bytes per durable record and the RSS reading's median in the loop.
fn per_sample_cost(kind: RuntimeKind, samples: u64, dir: &Path, block_pread_ns: u64) -> (u64, u64) {
    println!(
        "== {} per-sample cost, tracked default mode, {samples} samples ==",
        kind.name()
    );
    let sink_dir = dir.join("per-sample");
    std::fs::remove_dir_all(&sink_dir).ok();
    let config = TrackerConfig::new(RuntimeKind::GpumemprofCpu, Some(sink_dir.clone()));
    let interval = config.sampling_interval;
    let collector = open_collector(RuntimeKind::GpumemprofCpu, 512, 0).expect("collector");
    let mut tracker = Tracker::start(collector, config).expect("tracker");
    let mut reading = RssCollector::open().expect("open statm");
    let mut ns = Vec::with_capacity(samples as usize);
    let mut read_ns = Vec::with_capacity(samples as usize);
    for i in 0..samples {
        let start = Instant::now();
        tracker.emit_sample(i, equivalent_time(interval, i));
        let sampled = Instant::now();
        drop(std::hint::black_box(reading.rss_bytes()));
        read_ns.push(sampled.elapsed().as_nanos() as u64);
        ns.push((sampled - start).as_nanos() as u64);
    }
    let report = tracker.finish();
    let record_bytes = report.sink.as_ref().map_or(0, |s| {
        (s.pruned_bytes + s.final_retained_bytes) / s.durable_records.max(1)
    });
    ns.sort_unstable();
    read_ns.sort_unstable();
    println!(
        "median {} ns, p90 {} ns, p99 {} ns, p99.9 {} ns, max {} ns (sink durable records {})",
        percentile(&ns, 0.5),
        percentile(&ns, 0.9),
        percentile(&ns, 0.99),
        percentile(&ns, 0.999),
        ns.last().copied().unwrap_or(0),
        report.sink.map_or(0, |s| s.durable_records)
    );
    let sample = percentile(&ns, 0.5);
    let read = percentile(&read_ns, 0.5);
    println!(
        "RSS pread alone, same loop: median {read} ns, p99 {} ns",
        percentile(&read_ns, 0.99)
    );
    println!(
        "ratio per-sample / RSS reading (medians, same loop): {:.2}x (target <= 1.25x)",
        sample as f64 / read.max(1) as f64
    );
    println!(
        "ratio per-sample / RSS reading of the RSS section ({block_pread_ns} ns): {:.2}x",
        sample as f64 / block_pread_ns.max(1) as f64
    );
    std::fs::remove_dir_all(&sink_dir).ok();
    (record_bytes, read)
}

/// The sink's durability contract with nothing else: one `write` of a group of
/// `DEFAULT_FLUSH_EVERY_EVENTS` records of `record_bytes` each and one `fdatasync`, group after
/// group, into a file of the bench directory (the sink's file system), on this thread alone.
/// Prints the CPU and wall time per record, medians of the runs, and the sum with the RSS
/// reading (`read_ns`): what a tracked sample adds here for the reading and its share of the
/// contract while the writer keeps up (when batches queue, the writer syncs several at once).
fn contract_alone(record_bytes: u64, read_ns: u64, dir: &Path) {
    const RECORDS: u64 = 50_000;
    const RUNS: usize = 9;
    let group = DEFAULT_FLUSH_EVERY_EVENTS;
    println!(
        "== the durability contract alone: a write and an fdatasync per group of {group} records of {record_bytes} bytes, {RECORDS} records, {RUNS} runs =="
    );
    let bytes = vec![b'x'; usize::try_from(group * record_bytes).expect("group size")];
    let path = dir.join("contract-alone.jsonl");
    let mut cpu = Vec::with_capacity(RUNS);
    let mut wall = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let mut file = File::create(&path).expect("contract file");
        let cpu_start = scenario::process_cpu_seconds();
        let start = Instant::now();
        for _ in 0..RECORDS / group {
            file.write_all(&bytes).expect("write a group");
            file.sync_data().expect("fdatasync a group");
        }
        wall.push(start.elapsed().as_secs_f64() * 1e9 / RECORDS as f64);
        cpu.push((scenario::process_cpu_seconds() - cpu_start) * 1e9 / RECORDS as f64);
        drop(file);
        std::fs::remove_file(&path).ok();
    }
    let cpu = median_f(&mut cpu);
    println!(
        "median: cpu {cpu:.0} ns/record, wall {:.0} ns/record; with the RSS reading ({read_ns} ns): {:.0} ns per sample",
        median_f(&mut wall),
        cpu + read_ns as f64
    );
}

/// Pairs per overhead run (the scenario's floor is 6).
const OVERHEAD_PAIRS: u64 = 10;

/// The overhead scenario as `fleetgate run` runs it (the default reference workload, the
/// tracked default mode against unprofiled in ABBA pairs), `repeat` times: each run's median
/// added wall and CPU time per sample over its pairs, then the median over the runs.
fn overhead_cost(kind: RuntimeKind, repeat: usize, dir: &Path) {
    let tracker = TrackerConfig::new(kind, Some(PathBuf::new()));
    let workload = Workload {
        iterations: 5_000,
        allocation_kb: 512,
    };
    let samples = overhead_sample_count(workload.iterations, tracker.sampling_interval);
    println!(
        "== {} overhead workload: {} steps of {} KiB, {samples} samples, {OVERHEAD_PAIRS} pairs x {repeat} runs ==",
        kind.name(),
        workload.iterations,
        workload.allocation_kb
    );
    let spec = OverheadSpec {
        tracker,
        workload,
        workload_kind: WorkloadKind::Reference,
        tensorflow_device: "/CPU:0",
        runtime_dir: dir.join("overhead"),
        scratch_dir: None,
        samples,
        limits: PairLimits {
            min_pairs: OVERHEAD_PAIRS,
            max_duration: Duration::ZERO,
        },
    };
    let mut wall = Vec::new();
    let mut cpu = Vec::new();
    let mut cpu_pct = Vec::new();
    for run in 0..repeat {
        let cancel = AtomicBool::new(false);
        let mut progress = |_: Progress| {};
        let block = scenario::run_overhead(
            &spec,
            || open_collector(kind, 512, 0),
            &mut Hooks::new(&mut progress, &cancel),
        )
        .expect("overhead");
        let column = |f: fn(&fleetgate_common::report::OverheadPair) -> f64| {
            let mut values: Vec<f64> = block.pairs.iter().map(f).collect();
            median_f(&mut values)
        };
        let (w, c, p) = (
            column(|p| p.added_wall_ns_per_sample),
            column(|p| p.added_cpu_ns_per_sample),
            column(|p| p.cpu_overhead_pct),
        );
        println!(
            "run {}: {} pairs, added wall {w:.0} ns/sample, added cpu {c:.0} ns/sample, cpu overhead {p:.1} % (medians of the pairs)",
            run + 1,
            block.pairs.len()
        );
        wall.push(w);
        cpu.push(c);
        cpu_pct.push(p);
    }
    std::fs::remove_dir_all(dir.join("overhead")).ok();
    println!(
        "median: added wall ns/sample {:.0}, added cpu ns/sample {:.0}, cpu overhead {:.1} %",
        median_f(&mut wall),
        median_f(&mut cpu),
        median_f(&mut cpu_pct)
    );
}

struct SoakFigures {
    samples_per_second: f64,
}

fn soak_throughput(kind: RuntimeKind, samples: u64, repeat: usize, dir: &Path) -> SoakFigures {
    println!(
        "== {} soak, {samples} samples, {repeat} runs ==",
        kind.name()
    );
    let mut wall = Vec::new();
    let mut rate = Vec::new();
    let mut cpu = Vec::new();
    let mut rss_delta = Vec::new();
    for run in 0..repeat {
        let spec = SoakSpec {
            tracker: TrackerConfig::new(kind, Some(PathBuf::new())),
            samples,
            profile: "bench".to_owned(),
            artifact_dir: dir.join("soak"),
            retention: RetentionValidationLimits::default(),
        };
        let cancel = AtomicBool::new(false);
        let mut progress = |_: Progress| {};
        let result = scenario::run_soak(
            &spec,
            || fleetgate_agent::runtime::open_collector(kind, 512, 0),
            &mut Hooks::new(&mut progress, &cancel),
        )
        .expect("soak");
        println!(
            "run {}: {:.3} s wall, {:.3} s cpu, {:.0} samples/s, rollovers {}, pruned {}, retained {} files / {} bytes, max RSS delta {} B",
            run + 1,
            result.wall_seconds,
            result.cpu_seconds,
            result.samples_per_second,
            result.rollover_count,
            result.pruned_segment_count,
            result.final_retained_files,
            result.final_retained_bytes,
            result.max_rss_delta_bytes
        );
        wall.push(result.wall_seconds);
        rate.push(result.samples_per_second);
        cpu.push(result.cpu_seconds);
        rss_delta.push(result.max_rss_delta_bytes as f64);
    }
    std::fs::remove_dir_all(dir.join("soak")).ok();
    let figures = SoakFigures {
        samples_per_second: median_f(&mut rate),
    };
    println!(
        "median: {:.3} s wall, {:.3} s cpu, {:.0} samples/s, max RSS delta {:.0} B",
        median_f(&mut wall),
        median_f(&mut cpu),
        figures.samples_per_second,
        median_f(&mut rss_delta)
    );
    figures
}

fn reference(samples: u64, repeat: usize, ours: Option<&SoakFigures>) {
    println!(
        "== reference: stormlog 0.4.3 CPU tracker with its sink, {samples} samples, {repeat} runs =="
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/reference/run-stormlog.sh");
    let mut rates = Vec::new();
    for run in 0..repeat {
        let out = Command::new("bash")
            .arg(&script)
            .args(["--samples", &samples.to_string()])
            .output();
        let out = match out {
            Ok(out) if out.status.success() => out,
            Ok(out) => {
                println!(
                    "reference failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                return;
            }
            Err(e) => {
                println!("reference could not start: {e}");
                return;
            }
        };
        let line = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = match serde_json::from_str(line.trim()) {
            Ok(v) => v,
            Err(e) => {
                println!("reference printed no result ({e}): {line}");
                return;
            }
        };
        let rate = v["samples_per_second"].as_f64().unwrap_or(0.0);
        println!(
            "run {}: {:.2} s wall, {:.0} samples/s, per-sample median {} ns / p99 {} ns, rollovers {}, pruned {}, retained {} files, peak RSS {} B",
            run + 1,
            v["wall_seconds"].as_f64().unwrap_or(0.0),
            rate,
            v["per_sample_ns_median"],
            v["per_sample_ns_p99"],
            v["rollover_count"],
            v["pruned_segment_count"],
            v["final_retained_files"],
            v["peak_rss_bytes"]
        );
        rates.push(rate);
    }
    let theirs = median_f(&mut rates);
    println!("median: {theirs:.0} samples/s");
    if let Some(ours) = ours {
        println!(
            "ratio fleetgate / reference (median samples/s): {:.1}x",
            ours.samples_per_second / theirs.max(f64::MIN_POSITIVE)
        );
    }
}

fn main() {
    let o = options();
    let scratch = o.scratch.clone().unwrap_or_else(std::env::temp_dir);
    let dir = scratch.join(format!("fleetgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench directory");
    println!("bench directory: {}", dir.display());
    let pread_ns = rss_read_costs();
    let (record_bytes, read_ns) = per_sample_cost(o.runtime, 216_000, &dir, pread_ns);
    overhead_cost(o.runtime, o.repeat, &dir);
    contract_alone(record_bytes, read_ns, &dir);
    let mut first = None;
    for &samples in &o.samples {
        let figures = soak_throughput(o.runtime, samples, o.repeat, &dir);
        first.get_or_insert((samples, figures));
    }
    if o.reference {
        let (samples, figures) = match &first {
            Some((s, f)) => (*s, Some(f)),
            None => (216_000, None),
        };
        reference(samples, o.repeat.min(3), figures);
    }
    std::fs::remove_dir_all(&dir).ok();
}
