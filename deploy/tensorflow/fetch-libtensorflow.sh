#!/usr/bin/env bash
# Installs libtensorflow for fleetgate's TensorFlow runtimes, from the `tensorflow-cpu` wheel
# on PyPI (the only registry that carries it): downloads the pinned wheel, verifies its
# checksum, and extracts the C API library, its framework library and their licence files
# into a cache folder outside git. Idempotent; prints the folder (use it as TENSORFLOW_DIR).
#
#   deploy/tensorflow/fetch-libtensorflow.sh [DEST]
#
# DEST defaults to ${FLEETGATE_CACHE_DIR:-$HOME/.cache/fleetgate}/tensorflow-2.21.0, which is
# also where the fleetgate binaries look when TENSORFLOW_DIR is not set.
set -euo pipefail

readonly VERSION="2.21.0"
readonly WHEEL="tensorflow_cpu-${VERSION}-cp311-cp311-manylinux_2_27_x86_64.whl"
readonly SHA256="2b847d217b02ee7731ed91431daf3250daa0196c3c94614d23be27232e6e5b6c"

cache="${FLEETGATE_CACHE_DIR:-$HOME/.cache/fleetgate}"
dest="${1:-$cache/tensorflow-$VERSION}"

log() { printf 'fetch-libtensorflow: %s\n' "$*" >&2; }

if [[ -f "$dest/libtensorflow.so" && -f "$dest/.complete" ]]; then
    echo "$dest"
    exit 0
fi

wheels="$cache/wheels"
mkdir -p "$wheels"
if [[ ! -f "$wheels/$WHEEL" ]] || ! echo "$SHA256  $wheels/$WHEEL" | sha256sum --check --status; then
    log "downloading tensorflow-cpu==$VERSION (about 274 MB) from PyPI"
    rm -f "$wheels/$WHEEL"
    python3 -m pip download "tensorflow-cpu==$VERSION" --no-deps --only-binary=:all: \
        --platform manylinux_2_27_x86_64 --python-version 3.11 --implementation cp \
        --disable-pip-version-check -q -d "$wheels" >&2
fi
if ! echo "$SHA256  $wheels/$WHEEL" | sha256sum --check --status; then
    log "checksum mismatch for $wheels/$WHEEL (expected $SHA256); refusing to install it"
    exit 1
fi

staging="$(mktemp -d "${dest%/*}/.tensorflow-staging.XXXXXX" 2>/dev/null || { mkdir -p "${dest%/*}"; mktemp -d "${dest%/*}/.tensorflow-staging.XXXXXX"; })"
trap 'rm -rf "$staging"' EXIT
log "extracting libtensorflow into $dest"
python3 - "$wheels/$WHEEL" "$staging" <<'PY'
import sys, zipfile, os
wheel, out = sys.argv[1], sys.argv[2]
wanted = {
    "tensorflow/libtensorflow_cc.so.2": "libtensorflow_cc.so.2",
    "tensorflow/libtensorflow_framework.so.2": "libtensorflow_framework.so.2",
    "tensorflow/THIRD_PARTY_NOTICES.txt": "THIRD_PARTY_NOTICES.txt",
    "tensorflow/include/LICENSE": "LICENSE",
}
with zipfile.ZipFile(wheel) as z:
    names = set(z.namelist())
    for member, name in wanted.items():
        if member not in names:
            sys.exit(f"{member} is not in {wheel}")
        with z.open(member) as src, open(os.path.join(out, name), "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
PY
ln -s libtensorflow_cc.so.2 "$staging/libtensorflow.so"
chmod 755 "$staging"
touch "$staging/.complete"
rm -rf "$dest"
mv "$staging" "$dest"
trap - EXIT
echo "$dest"
