#!/usr/bin/env bash
# Makes what the compose fleet's TLS and tokens need, in deploy/compose/secrets (or $1):
# a lab CA, the coordinator's certificate (names: coordinator, localhost, 127.0.0.1), one
# client certificate per agent (agent-1, agent-2, agent-3, agent-ro), an agent join token and a
# client token. An existing CA there is reused; tokens are kept if present.
#
#   deploy/compose/make-secrets.sh            # then: docker-compose -f deploy/compose/compose.yaml up -d
#
# The containers run as uid 10001: run as root, the files are given to that user (keys stay
# 0600); otherwise they are made group- and world-readable, which suits a lab on one machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dir="${1:-$root/deploy/compose/secrets}"
fleetgate="${FLEETGATE_BIN:-}"
if [[ -z "$fleetgate" ]]; then
    if [[ -x "$root/target/release/fleetgate" ]]; then fleetgate="$root/target/release/fleetgate"
    else fleetgate="$(command -v fleetgate)" || { echo "make-secrets: no fleetgate binary (build it, or set FLEETGATE_BIN)" >&2; exit 1; }
    fi
fi
mkdir -p "$dir"
"$fleetgate" certs --out "$dir" --coordinator-name coordinator,localhost,127.0.0.1 \
    --agent agent-1,agent-2,agent-3,agent-ro >/dev/null
for name in agent client; do
    if [[ ! -s "$dir/$name.token" ]]; then
        (umask 077; python3 -c 'import secrets; print(secrets.token_hex(32))' >"$dir/$name.token")
    fi
done
if [[ "$(id -u)" == 0 ]]; then
    chown -R 10001:10001 "$dir"
else
    chmod a+rx "$dir" && chmod a+r "$dir"/*
fi
echo "$dir"
