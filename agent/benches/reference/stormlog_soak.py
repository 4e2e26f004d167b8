"""Accelerated soak of stormlog's CPU tracker, for side-by-side timing.

stormlog 0.4.3 qualifies its always-on monitor with an "accelerated soak":
instead of letting the tracker's background thread sample every
``sampling_interval`` seconds, the harness drives a synthetic session and
emits the samples back to back.  Six hours at 0.1 s is 216,000 samples,
which is our default.  This driver reproduces that session against the
installed package so that its throughput, per-sample cost and sink counters
can be compared with the Rust agent's own soak.

Only stdout's single JSON line is the result; everything else goes to
stderr so the caller can parse stdout as-is.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any, Sequence

from stormlog.cpu_profiler import CPUMemoryTracker
from stormlog.telemetry_sink import TelemetrySinkConfig

IMPLEMENTATION = "stormlog 0.4.3"
# The name stormlog's harness gives this runtime (`gpumemprof track` falling
# back to the CPU tracker); kept so results line up with its reports.
RUNTIME = "gpumemprof_cpu"
DEFAULT_SAMPLES = 216_000
DEFAULT_INTERVAL_S = 0.1

# Same wording as stormlog's own soak, so every record carries the same
# number of bytes and final_retained_bytes stays comparable with its reports.
START_CONTEXT = "operability harness start"
SAMPLE_CONTEXT = "operability sample {index}"


class CpuSoakSession:
    """A `gpumemprof track` CPU session driven one sample at a time.

    ``start_tracking()`` would also launch the sampling thread, whose own
    samples would interleave with ours and make the event count depend on
    wall time.  So the session is primed by hand, the same way stormlog's
    harness does it, and every event still goes through the tracker's own
    event path: history window, record encoding and the append-only sink.
    """

    def __init__(self, sink_dir: Path, interval_s: float) -> None:
        # Only root_dir is given: flush (50 events / 2.0 s), rollover
        # (64 MiB / 10,000 events) and retention (8 files / 512 MiB) are
        # stormlog's defaults, which are also what its soak uses.
        self.tracker = CPUMemoryTracker(
            sampling_interval=interval_s,
            enable_alerts=False,
            telemetry_sink_config=TelemetrySinkConfig(root_dir=sink_dir),
        )

    def start(self) -> None:
        tracker = self.tracker
        tracker.is_tracking = True
        tracker._stop_event.clear()
        tracker.stats["tracking_start_time"] = time.time()
        # A fresh session, registered with the sink before the first record,
        # so every segment belongs to this run's session.
        tracker._session_summary = None
        tracker._open_session()
        tracker._add_event("start", 0, START_CONTEXT)

    def emit_sample(self, index: int) -> None:
        # What one tick of the sampling thread costs: an RSS read, the peak
        # and tick bookkeeping, and one `sample` event through to the sink.
        tracker = self.tracker
        rss = tracker._current_rss()
        tracker.stats["peak_memory"] = max(tracker.stats["peak_memory"], rss)
        tracker.stats["total_events"] = int(tracker.stats["total_events"]) + 1
        tracker._add_event("sample", 0, SAMPLE_CONTEXT.format(index=index))

    def finish(self) -> None:
        # Adds the `stop` event, flushes and closes the sink (which writes
        # the manifest and the rollups) and stops the sink's flush thread.
        self.tracker.stop_tracking()

    def statistics(self) -> dict[str, Any]:
        # Carries the history counters and the sink diagnostics captured
        # when the sink was closed.
        return self.tracker.get_statistics()


def nearest_rank(sorted_values: Sequence[int], quantile: float) -> int:
    """Nearest-rank percentile: always an observed value, never interpolated."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(quantile * len(sorted_values)))
    return int(sorted_values[rank - 1])


def run_soak(samples: int, sink_dir: Path, interval_s: float) -> dict[str, Any]:
    session = CpuSoakSession(sink_dir, interval_s)
    session.start()

    # Preallocated so that recording a duration neither allocates nor
    # resizes a list while the loop is being timed.
    per_sample_ns = array("q", [0]) * samples
    clock_ns = time.perf_counter_ns
    emit = session.emit_sample

    loop_start = time.perf_counter()
    try:
        for index in range(samples):
            before = clock_ns()
            emit(index)
            per_sample_ns[index] = clock_ns() - before
    finally:
        # A failed sample must still close the sink, or its last records
        # would stay unflushed and the manifest would show a running session.
        session.finish()
    wall_seconds = time.perf_counter() - loop_start

    # Read before sorting the durations, so the peak is the tracker's and
    # not this driver's bookkeeping.  Linux reports ru_maxrss in KiB.
    peak_rss_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    stats = session.statistics()
    ordered = sorted(per_sample_ns)

    return {
        "implementation": IMPLEMENTATION,
        "runtime": RUNTIME,
        "samples": samples,
        "wall_seconds": wall_seconds,
        "samples_per_second": samples / wall_seconds if wall_seconds > 0 else 0.0,
        "per_sample_ns_median": nearest_rank(ordered, 0.50),
        "per_sample_ns_p99": nearest_rank(ordered, 0.99),
        "rollover_count": int(stats["rollover_count"]),
        "pruned_segment_count": int(stats["pruned_segment_count"]),
        "pruned_bytes": int(stats["pruned_bytes"]),
        "final_retained_files": int(stats["final_retained_files"]),
        "final_retained_bytes": int(stats["final_retained_bytes"]),
        "history_dropped_events": int(stats["history_dropped_events"]),
        "peak_rss_bytes": int(peak_rss_bytes),
    }


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Accelerated soak of stormlog 0.4.3's CPU tracker with its "
            "append-only telemetry sink; prints one JSON line."
        ),
    )
    parser.add_argument(
        "--samples",
        type=positive_int,
        default=DEFAULT_SAMPLES,
        help=f"sample events to emit (default {DEFAULT_SAMPLES}: 6 h at 0.1 s)",
    )
    parser.add_argument(
        "--sink-dir",
        type=Path,
        default=None,
        help="empty or missing directory for the sink; kept afterwards "
        "(default: a temporary directory, removed afterwards)",
    )
    parser.add_argument(
        "--interval",
        type=positive_float,
        default=DEFAULT_INTERVAL_S,
        help="nominal sampling interval in seconds, recorded in every "
        f"event; the soak itself does not sleep (default {DEFAULT_INTERVAL_S})",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    if args.sink_dir is None:
        sink_dir = Path(tempfile.mkdtemp(prefix="stormlog-soak-"))
        remove_sink = True
    else:
        sink_dir = args.sink_dir
        # The sink adopts whatever segments it finds, which would change
        # every counter; refuse rather than report a mixed run.
        if sink_dir.exists() and any(sink_dir.iterdir()):
            print(f"stormlog_soak: sink dir {sink_dir} is not empty", file=sys.stderr)
            return 2
        remove_sink = False

    # Whatever the package might print while running goes to stderr, so
    # stdout carries the result line and nothing else.
    result_stream = sys.stdout
    sys.stdout = sys.stderr
    try:
        result = run_soak(args.samples, sink_dir, args.interval)
    finally:
        sys.stdout = result_stream
        if remove_sink:
            shutil.rmtree(sink_dir, ignore_errors=True)

    result_stream.write(json.dumps(result, separators=(",", ":")) + "\n")
    result_stream.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
