#!/usr/bin/env bash
# Runs the stormlog 0.4.3 accelerated-soak driver (stormlog_soak.py) in a
# private virtualenv, passing every argument through.
#
# The venv is built once under ${FLEETGATE_CACHE_DIR:-$HOME/.cache/fleetgate}
# and reused; only that first run needs to reach PyPI. Diagnostics go to
# stderr: stdout is reserved for the driver's single JSON line.
set -euo pipefail

readonly STORMLOG_VERSION="0.4.3"

script_dir="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
cache_dir="${FLEETGATE_CACHE_DIR:-$HOME/.cache/fleetgate}"
venv_dir="${cache_dir}/stormlog-${STORMLOG_VERSION}-venv"
venv_python="${venv_dir}/bin/python"

log() {
    printf 'run-stormlog: %s\n' "$*" >&2
}

if [[ ! -x "${venv_python}" ]]; then
    log "creating virtualenv at ${venv_dir}"
    mkdir -p -- "${cache_dir}"
    python3 -m venv -- "${venv_dir}" >&2
fi

# Asked of the venv's own interpreter, so a stormlog installed elsewhere, or
# another version left in the venv, never counts as installed.
installed_version() {
    "${venv_python}" - <<'EOF' 2>/dev/null
from importlib.metadata import PackageNotFoundError, version

try:
    print(version("stormlog"))
except PackageNotFoundError:
    pass
EOF
}

if [[ "$(installed_version || true)" != "${STORMLOG_VERSION}" ]]; then
    log "installing stormlog==${STORMLOG_VERSION} into ${venv_dir}"
    "${venv_python}" -m pip install -q --disable-pip-version-check \
        "stormlog==${STORMLOG_VERSION}" >&2
fi

exec "${venv_python}" "${script_dir}/stormlog_soak.py" "$@"
