#!/usr/bin/env bash
# One short run of the GPU runtimes on a GPU host, saving the report and the figures.
#
#   deploy/gpu/check-gpu-host.sh [OUT_DIR]
#
# Builds fleetgate, installs a GPU-enabled libtensorflow (the `tensorflow[and-cuda]` wheel
# and the CUDA libraries it pulls, into a cached virtualenv; only its shared libraries are
# used), prints what TensorFlow sees, then runs `fleetgate run` with tfmemprof_gpu (and the
# CPU runtimes as a reference) on the embedded default. A few minutes on a warm cache.
set -euo pipefail

out="${1:-artifacts/gpu-check}"
cache="${FLEETGATE_CACHE_DIR:-$HOME/.cache/fleetgate}"
venv="$cache/tensorflow-gpu-2.21.0-venv"
mkdir -p "$out"

log() { printf 'check-gpu-host: %s\n' "$*" >&2; }

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/nvidia-smi.csv" >&2 \
    || log "nvidia-smi not found: the NVIDIA driver does not seem to be installed"

if [[ ! -x "$venv/bin/python" ]]; then
    log "installing tensorflow[and-cuda]==2.21.0 into $venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "tensorflow[and-cuda]==2.21.0"
fi
site="$("$venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')"
tfdir="$cache/tensorflow-gpu-2.21.0"
mkdir -p "$tfdir"
ln -sf "$site/tensorflow/libtensorflow_cc.so.2" "$tfdir/libtensorflow_cc.so.2"
ln -sf "$site/tensorflow/libtensorflow_framework.so.2" "$tfdir/libtensorflow_framework.so.2"
ln -sf libtensorflow_cc.so.2 "$tfdir/libtensorflow.so"
# The CUDA libraries of the nvidia-* wheels.
cuda_libs="$(find "$site/nvidia" -maxdepth 2 -type d -name lib 2>/dev/null | paste -sd:)"
export TENSORFLOW_DIR="$tfdir"
export LD_LIBRARY_PATH="$site/tensorflow:${cuda_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

log "building fleetgate (release)"
cargo build --release --locked -p fleetgate-coordinator -p fleetgate-agent >&2

log "probing the runtimes (what the agent will report)"
target/release/fleetgate worker --probe | tee "$out/probe.json"

log "running the GPU runtimes (pr profile, soak at a 10 s interval to keep it short)"
set +e
/usr/bin/time -v target/release/fleetgate run --profile pr --mode all \
    --runtimes gpumemprof_cpu,gpumemprof_cuda,tfmemprof_cpu,tfmemprof_gpu \
    --workload tensorflow --iterations 2000 \
    --set tfmemprof_gpu.sampling_interval_seconds=10 \
    --output "$out/report.json" --markdown "$out/summary.md" --junit "$out/junit.xml" \
    2> >(tee "$out/stderr.txt" >&2) | tee "$out/console.txt"
status=$?
set -e
log "exit status $status; report in $out/report.json"
exit "$status"
