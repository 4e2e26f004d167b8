#!/usr/bin/env bash
# Builds fleetgate's container images without pulling anything: each image is `FROM scratch`
# with a root filesystem assembled here from the release binaries and the shared libraries
# they load (found with ldd), a non-root user, and (agent-tensorflow) libtensorflow.
#
#   deploy/images/build-images.sh [TAG]        # default tag: dev
#
# Images: fleetgate/coordinator, fleetgate/agent, fleetgate/agent-tensorflow.
set -euo pipefail

tag="${1:-dev}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
out="$root/target/images"
log() { printf 'build-images: %s\n' "$*" >&2; }

# The commit the binaries are built from (`--version`, the report's `generator`): their build
# scripts read it from git; a tree copied without .git gives it as FLEETGATE_BUILD_COMMIT.
# The images record it too, as their org.opencontainers.image.revision label.
if commit="$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null)"; then
    [[ -z "$(git -C "$root" status --porcelain --untracked-files=no)" ]] || commit="$commit-dirty"
else
    commit="${FLEETGATE_BUILD_COMMIT:-unknown}"
fi
export FLEETGATE_BUILD_COMMIT="$commit"

log "building release binaries (commit $commit)"
cargo build --release --locked -p fleetgate-coordinator -p fleetgate-agent >&2

# Copies FILE and every shared library it needs (recursively, as ldd resolves them) into ROOTFS.
copy_with_libs() {
    local rootfs="$1" file="$2" dest="$3"
    mkdir -p "$rootfs$(dirname "$dest")"
    cp -L "$file" "$rootfs$dest"
    # Debug line tables are for local profiling; images ship stripped binaries.
    if command -v strip >/dev/null; then strip --strip-unneeded "$rootfs$dest"; fi
    ldd "$file" | awk '/=>/ { print $3 } !/=>/ && /^\t\// { print $1 }' | while read -r lib; do
        [[ -n "$lib" && -f "$lib" ]] || continue
        mkdir -p "$rootfs$(dirname "$lib")"
        cp -Ln "$lib" "$rootfs$lib"
    done
}

base_rootfs() {
    local rootfs="$1"
    rm -rf "$rootfs"
    mkdir -p "$rootfs/etc" "$rootfs/tmp" "$rootfs/var/lib/fleetgate/artifacts" "$rootfs/var/lib/fleetgate/state"
    chmod 1777 "$rootfs/tmp"
    printf 'root:x:0:0:root:/:/sbin/nologin\nfleetgate:x:10001:10001:fleetgate:/var/lib/fleetgate:/sbin/nologin\n' > "$rootfs/etc/passwd"
    printf 'root:x:0:\nfleetgate:x:10001:\n' > "$rootfs/etc/group"
    chown -R 10001:10001 "$rootfs/var/lib/fleetgate"
}

image() {
    local name="$1" dockerfile="$2"
    log "docker build fleetgate/$name:$tag"
    docker build -q -f "$root/deploy/images/$dockerfile" -t "fleetgate/$name:$tag" \
        --build-arg "FLEETGATE_BUILD_COMMIT=$commit" "$out/$name" >&2
}

# Coordinator: the fleetgate binary (it also carries the CLI, `fleetgate agents` for the health check).
rootfs="$out/coordinator/rootfs"
base_rootfs "$rootfs"
copy_with_libs "$rootfs" target/release/fleetgate /usr/local/bin/fleetgate
image coordinator Dockerfile.coordinator

# Agent (CPU and, with the NVIDIA container runtime mounting libnvidia-ml, GPU hosts).
rootfs="$out/agent/rootfs"
base_rootfs "$rootfs"
copy_with_libs "$rootfs" target/release/fleetgate-agent /usr/local/bin/fleetgate-agent
image agent Dockerfile.agent

# Agent with libtensorflow (tfmemprof runtimes).
tfdir="$("$root/deploy/tensorflow/fetch-libtensorflow.sh")"
rootfs="$out/agent-tensorflow/rootfs"
base_rootfs "$rootfs"
copy_with_libs "$rootfs" target/release/fleetgate-agent /usr/local/bin/fleetgate-agent
mkdir -p "$rootfs/opt/tensorflow"
for f in libtensorflow_cc.so.2 libtensorflow_framework.so.2; do
    copy_with_libs "$rootfs" "$tfdir/$f" "/opt/tensorflow/$f"
done
ln -s libtensorflow_cc.so.2 "$rootfs/opt/tensorflow/libtensorflow.so"
cp "$tfdir/LICENSE" "$tfdir/THIRD_PARTY_NOTICES.txt" "$rootfs/opt/tensorflow/"
image agent-tensorflow Dockerfile.agent-tensorflow

docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep "^fleetgate/.*:$tag " >&2
