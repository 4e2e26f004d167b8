//! History benchmark: how fast the run history records, lists and shows, and how large it
//! grows. Not a test: it prints figures and asserts none.
//!
//! ```text
//! cargo bench -p fleetgate-coordinator --bench history -- [--runs 1000] [--repeat 7]
//!     [--classes 4]
//! ```
//!
//! A real report of a tiny `fleetgate run` (`coordinator/tests/fixtures/history-report.json`)
//! is the template: `--runs` copies of it, each with `--classes` hardware classes whose
//! metric medians vary run to run (with a step halfway, so the series has a change point), are
//! recorded one transaction each into a new file. Then `list` (20 and all runs), `show METRIC`
//! (one class and every class, the last 100 runs, change points included), `show` over all
//! runs, and the advice for the last run are each timed `--repeat` times; the median is
//! printed with the fastest and slowest. Last, the file's size.

#![expect(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::time::{Duration, Instant};

use fleetgate_common::report::Report;
use fleetgate_coordinator::history::History;

const TEMPLATE: &str = include_str!("../tests/fixtures/history-report.json");
const METRIC: &str = "gpumemprof_cpu.runtime_overhead_pct";

struct Options {
    runs: u32,
    repeat: usize,
    classes: u32,
}

fn options() -> Options {
    let mut options = Options {
        runs: 1_000,
        repeat: 7,
        classes: 4,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).and_then(|v| v.parse::<u32>().ok());
        match (args[i].as_str(), value) {
            ("--runs", Some(v)) => options.runs = v.max(1),
            ("--repeat", Some(v)) => options.repeat = v.max(1) as usize,
            ("--classes", Some(v)) => options.classes = v.max(1),
            // `cargo bench` passes `--bench`; anything else is ignored too.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    options
}

/// The template as run `i` of `runs`: finished `i` minutes after the first, with `classes`
/// copies of its class whose medians wobble, and step up by a fifth halfway.
fn synthetic(template: &Report, i: u32, runs: u32, classes: u32) -> Report {
    let mut report = template.clone();
    let minute = i64::from(i);
    report.timestamp_utc = format!(
        "2026-{:02}-{:02}T{:02}:{:02}:00Z",
        1 + minute / (28 * 1440),
        1 + minute / 1440 % 28,
        minute / 60 % 24,
        minute % 60
    );
    let (class, summary) = template
        .hardware_classes
        .iter()
        .next()
        .expect("the template has a class");
    report.hardware_classes.clear();
    let wobble = f64::from(i.wrapping_mul(2_654_435_761) % 1_000) / 1_000.0 - 0.5;
    let step = if i >= runs / 2 { 1.2 } else { 1.0 };
    for c in 0..classes {
        let mut summary = summary.clone();
        for spread in summary.metrics.values_mut() {
            spread.median *= step * (1.0 + 0.05 * wobble + 0.01 * f64::from(c));
            spread.worst = spread.median;
        }
        report
            .hardware_classes
            .insert(format!("{class}-{c}"), summary);
    }
    for value in report.metrics.values_mut() {
        *value *= step * (1.0 + 0.05 * wobble);
    }
    report
}

/// Median, fastest and slowest of `repeat` timings of `f`.
fn time<T>(repeat: usize, mut f: impl FnMut() -> T) -> (Duration, Duration, Duration, T) {
    let mut times = Vec::with_capacity(repeat);
    let mut last = None;
    for _ in 0..repeat {
        let start = Instant::now();
        last = Some(f());
        times.push(start.elapsed());
    }
    times.sort();
    (
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
        last.expect("repeat is at least 1"),
    )
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let options = options();
    let template: Report = serde_json::from_str(TEMPLATE).expect("the template is a report");
    let work = tempfile::tempdir().expect("a temporary directory");
    let path = work.path().join("history.sqlite");
    let mut history = History::open(&path).expect("a new history");
    let class = format!(
        "{}-0",
        template.hardware_classes.keys().next().expect("a class")
    );

    let start = Instant::now();
    for i in 0..options.runs {
        let report = synthetic(&template, i, options.runs, options.classes);
        history
            .record(&format!("run-{i:06}"), &report)
            .expect("recorded");
    }
    let insert = start.elapsed();
    println!(
        "history benchmark: {} runs ({} classes each, template {} bytes of JSON), median of {}",
        options.runs,
        options.classes,
        TEMPLATE.len(),
        options.repeat
    );
    println!(
        "record: {} in all, {} per run (one transaction each)",
        ms(insert),
        ms(insert / options.runs)
    );

    let rows: Vec<(String, Box<dyn FnMut() -> String>)> = vec![
        (
            "list --limit 20".to_owned(),
            Box::new(|| format!("{} runs", history.list(20).expect("list").len())),
        ),
        (
            format!("list --limit {}", options.runs),
            Box::new(|| {
                format!(
                    "{} runs",
                    history.list(options.runs as usize).expect("list").len()
                )
            }),
        ),
        (
            format!("show {METRIC} --hardware-class {class} (last 100)"),
            Box::new(|| {
                let s = history.series(METRIC, Some(&class), 100).expect("show");
                format!(
                    "{} points, change points {:?}",
                    s[0].points.len(),
                    s[0].change_points
                )
            }),
        ),
        (
            format!("show {METRIC} (every class, last 100)"),
            Box::new(|| {
                let s = history.series(METRIC, None, 100).expect("show");
                format!("{} series", s.len())
            }),
        ),
        (
            format!(
                "show {METRIC} --hardware-class {class} --limit {}",
                options.runs
            ),
            Box::new(|| {
                let s = history
                    .series(METRIC, Some(&class), options.runs as usize)
                    .expect("show");
                format!(
                    "{} points, change points {:?}",
                    s[0].points.len(),
                    s[0].change_points
                )
            }),
        ),
    ];
    for (name, mut f) in rows {
        let (median, fastest, slowest, what) = time(options.repeat, &mut f);
        println!(
            "{name}: {} (fastest {}, slowest {}): {what}",
            ms(median),
            ms(fastest),
            ms(slowest)
        );
    }
    let last = synthetic(&template, options.runs - 1, options.runs, options.classes);
    let (median, fastest, slowest, advice) = time(options.repeat, || {
        history.advice(&last).expect("advice").len()
    });
    println!(
        "advice for the last run: {} (fastest {}, slowest {}): {advice} lines",
        ms(median),
        ms(fastest),
        ms(slowest)
    );
    drop(history);
    let size = |name: &str| {
        std::fs::metadata(work.path().join(name))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    let (db, wal) = (size("history.sqlite"), size("history.sqlite-wal"));
    println!(
        "file: {:.1} MiB ({} bytes; WAL after close {wal} bytes), {:.1} KiB per run",
        db as f64 / 1_048_576.0,
        db,
        db as f64 / 1_024.0 / f64::from(options.runs)
    );
}
