#!/usr/bin/env bash
# Makes what the compose fleet's TLS and tokens need, in deploy/compose/secrets (or $1):
# a lab CA, the coordinator's certificate (names: coordinator, localhost, 127.0.0.1), one
# client certificate per agent (agent-1, agent-2, agent-3, agent-ro), an agent join token and a
# client token. Only what is missing is made: an existing CA, certificates, keys and tokens are
# kept (delete a file to have it made again).
#
#   deploy/compose/make-secrets.sh            # then: docker-compose -f deploy/compose/compose.yaml up -d
#
# Who may read what (set on every run, whatever the files' modes were before):
# - the folder and ca.key: the user running this script only (0700, 0600); ca.key is never
#   mounted into a container;
# - certificates (*.pem): anyone (0644), they are public;
# - the keys and tokens the containers read (coordinator.key, agent-*.key, agent.token,
#   client.token): run as root, they are given to the containers' user (uid and gid 10001,
#   deploy/images/Dockerfile.*), mode 0600. Run as another user, who cannot give files away,
#   they stay that user's, mode 0640, group the user's primary group, and the fleet must be
#   started with FLEETGATE_SECRETS_GID set to that group (the line printed on stderr says so):
#   the containers' user then gets that group as a supplementary group.
# compose.yaml mounts into each container only the files it needs.
set -euo pipefail
umask 077
root="$(cd "$(dirname "$0")/../.." && pwd)"
dir="${1:-$root/deploy/compose/secrets}"
container_uid=10001
fleetgate="${FLEETGATE_BIN:-}"
if [[ -z "$fleetgate" ]]; then
    if [[ -x "$root/target/release/fleetgate" ]]; then fleetgate="$root/target/release/fleetgate"
    else fleetgate="$(command -v fleetgate)" || { echo "make-secrets: no fleetgate binary (build it, or set FLEETGATE_BIN)" >&2; exit 1; }
    fi
fi
mkdir -p "$dir"
chmod 700 "$dir"

args=()
if [[ ! -e "$dir/coordinator.key" && ! -e "$dir/coordinator.pem" ]]; then
    args+=(--coordinator-name coordinator,localhost,127.0.0.1)
fi
missing=()
for id in agent-1 agent-2 agent-3 agent-ro; do
    if [[ ! -e "$dir/agent-$id.key" && ! -e "$dir/agent-$id.pem" ]]; then missing+=("$id"); fi
done
if ((${#missing[@]})); then args+=(--agent "$(IFS=,; echo "${missing[*]}")"); fi
"$fleetgate" certs --out "$dir" "${args[@]}" >/dev/null

for name in agent client; do
    if [[ ! -s "$dir/$name.token" ]]; then
        head -c 32 /dev/urandom | od -An -v -tx1 | tr -d ' \n' >"$dir/$name.token.new"
        echo >>"$dir/$name.token.new"
        mv "$dir/$name.token.new" "$dir/$name.token"
    fi
done

chmod 600 "$dir/ca.key"
chmod 644 "$dir"/*.pem
readable=("$dir/coordinator.key" "$dir"/agent-*.key "$dir/agent.token" "$dir/client.token")
if [[ "$(id -u)" == 0 ]]; then
    chown "$container_uid:$container_uid" "${readable[@]}"
    chmod 600 "${readable[@]}"
else
    chgrp "$(id -g)" "${readable[@]}"
    chmod 640 "${readable[@]}"
    echo "make-secrets: not run as root, so the containers read the keys and tokens through group $(id -g): start the fleet with FLEETGATE_SECRETS_GID=$(id -g)" >&2
fi
echo "$dir"
