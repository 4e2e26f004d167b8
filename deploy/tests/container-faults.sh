#!/usr/bin/env bash
# Fault tests across real containers: the compose fleet (a coordinator and three agents on a
# private network) is built from this tree without pulling anything, then broken on purpose.
#
#   deploy/tests/container-faults.sh
#
# Each check is bounded in time; the script prints one PASS/FAIL line per check, the figures it
# measured, and a closing "container-faults: N passed, M failed" line; it exits non-zero if any
# check failed. Everything it starts is removed at the end.
set -uo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
project="fgfaults$$"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export FLEETGATE_PORT="$port" FLEETGATE_TAG="${FLEETGATE_TAG:-dev}"
url="https://127.0.0.1:$port"
compose=(docker-compose -p "$project" -f deploy/compose/compose.yaml)
fleetgate="$root/target/release/fleetgate"
work="$(mktemp -d)"
# Mutual TLS and tokens as in production: a lab CA and tokens made for this run; the host-side
# CLI trusts the CA and presents the client token through the environment.
secrets="$work/secrets"
export FLEETGATE_SECRETS="$secrets" FLEETGATE_CA_FILE="$secrets/ca.pem" FLEETGATE_CLIENT_TOKEN_FILE="$secrets/client.token"
# Made without root, the keys and tokens are readable by the containers through this group.
if [[ "$(id -u)" != 0 ]]; then export FLEETGATE_SECRETS_GID="$(id -g)"; fi
# An extra agent container's secrets, as compose mounts them: the CA certificate, the agent
# token and the certificate and key of agent $1 (another agent's, for an impostor), one file each.
agent_secrets() {
    local f
    printf '%s\n' -e FLEETGATE_COORDINATOR=https://coordinator:7400 -e FLEETGATE_CA_FILE=/run/fleetgate/ca.pem \
        -e FLEETGATE_AGENT_TOKEN_FILE=/run/fleetgate/agent.token \
        -e "FLEETGATE_AGENT_CERT_FILE=/run/fleetgate/agent-$1.pem" -e "FLEETGATE_AGENT_KEY_FILE=/run/fleetgate/agent-$1.key" \
        --group-add "${FLEETGATE_SECRETS_GID:-10001}"
    for f in ca.pem agent.token "agent-$1.pem" "agent-$1.key"; do
        printf '%s\n' --mount "type=bind,source=$secrets/$f,target=/run/fleetgate/$f,readonly"
    done
}
pass=0
fail=0

log() { printf 'container-faults: %s\n' "$*" >&2; }
result() {
    if [[ "$1" == 0 ]]; then pass=$((pass + 1)); echo "PASS $2"; else fail=$((fail + 1)); echo "FAIL $2${3:+: $3}"; fi
}
cleanup() {
    docker rm -f "$project-ro" >/dev/null 2>&1
    "${compose[@]}" down -v --timeout 5 >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT

# Waits (at most $2 s) until the coordinator lists the agents $1 (comma-separated) as connected.
wait_connected() {
    local want="$1" limit="$2" start=$SECONDS
    while (( SECONDS - start < limit )); do
        local up
        up="$("$fleetgate" agents --coordinator "$url" --json 2>/dev/null |
            python3 -c 'import json,sys; print(",".join(sorted(a["agent_id"] for a in json.load(sys.stdin) if a["state"] == "connected")))' 2>/dev/null)"
        if python3 -c 'import sys; want=set(sys.argv[1].split(",")); have=set(sys.argv[2].split(",")); sys.exit(0 if want <= have else 1)' "$want" "$up"; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

# Waits (at most 60 s) until the run's progress file shows agent $2 in its soak.
wait_soak() {
    local file="$1" agent="$2" start=$SECONDS
    while (( SECONDS - start < 60 )); do
        grep -q "^$agent gpumemprof_cpu soak: [0-9]*/[0-9]* ([1-9][0-9]\?%)" "$file" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# Prints the values of a Python expression on a report (`r`), separated by spaces.
report() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print($2)" "$1"; }

log "building the images"
deploy/images/build-images.sh >/dev/null || { echo "FAIL images"; echo "container-faults: 0 passed, 1 failed"; exit 1; }
docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep "^fleetgate/.*:$FLEETGATE_TAG " | sed 's/^/figure image size: /'

FLEETGATE_BIN="$fleetgate" deploy/compose/make-secrets.sh "$secrets" >/dev/null ||
    { echo "FAIL secrets"; echo "container-faults: 0 passed, 1 failed"; exit 1; }

log "starting the compose fleet"
start=$SECONDS
"${compose[@]}" up -d >/dev/null 2>&1
if wait_connected agent-1,agent-2,agent-3 90; then
    echo "figure cold start to three registered agents: $((SECONDS - start)) s"
    result 0 "compose fleet registers three agents"
else
    result 1 "compose fleet registers three agents"
    echo "container-faults: $pass passed, $fail failed"
    exit 1
fi

# 0. What each running container was given of the secrets folder: only its own files, each
#    read-only; never ca.key, never another agent's key, the client token only to the coordinator.
mounts_of() {
    docker inspect -f '{{range .Mounts}}{{if eq .Type "bind"}}{{.Source}}:{{.RW}} {{end}}{{end}}' "${project}_$1_1" |
        tr ' ' '\n' | grep . | sed "s|^$secrets/||" | sort | tr '\n' ' '
}
seen="coordinator: $(mounts_of coordinator)"
want="coordinator: agent.token:false ca.pem:false client.token:false coordinator.key:false coordinator.pem:false "
for id in agent-1 agent-2 agent-3; do
    seen+="$id: $(mounts_of "$id")"
    want+="$id: agent-$id.key:false agent-$id.pem:false agent.token:false ca.pem:false "
done
[[ "$seen" == "$want" ]]
result $? "each container mounts only its own secrets, read-only" "$seen"

# 1. A three-agent pr report from the host, and a one-agent run to compare. Three agents share
#    this host's cores while they measure overhead, so the overhead maxima are raised out of
#    reach here (the overhead gate has tests of its own); everything else is the shipped budget.
python3 - "docs/benchmarks/v0.4_operating_budget.json" "$work/relaxed-budgets.json" <<'PY'
import json, sys
budgets = json.load(open(sys.argv[1]))
for key in budgets["budgets"]:
    if key.endswith("_overhead_pct"):
        budgets["budgets"][key] = 1e9
json.dump(budgets, open(sys.argv[2], "w"))
PY
t0=$(date +%s.%N)
timeout 300 "$fleetgate" run --coordinator "$url" --min-agents 3 --runtimes gpumemprof_cpu --check \
    --budgets "$work/relaxed-budgets.json" --output "$work/three.json" >/dev/null 2>"$work/three.err"
rc=$?
t1=$(date +%s.%N)
timeout 300 "$fleetgate" run --coordinator "$url" --agents agent-1 --runtimes gpumemprof_cpu \
    --output "$work/one.json" >/dev/null 2>&1
t2=$(date +%s.%N)
python3 -c "import sys; a,b,c=map(float,sys.argv[1:]); print(f'figure pr run wall: three agents {b-a:.2f} s, one agent {c-b:.2f} s, ratio {(b-a)/(c-b):.2f}')" "$t0" "$t1" "$t2"
agents="$(report "$work/three.json" 'len(r["agents"])' 2>/dev/null)"
[[ "$rc" == 0 && "$agents" == 3 ]]
result $? "three-agent report from the host" "exit $rc, $agents agent sections$( [[ "$rc" == 0 ]] || { echo; tail -5 "$work/three.err"; } )"

# 2. An agent container killed mid-soak: report by the deadline, inconclusive, others complete.
timeout 120 "$fleetgate" run --coordinator "$url" --min-agents 3 --runtimes gpumemprof_cpu --mode soak \
    --profile nightly --deadline-seconds 25 --check --output "$work/kill.json" >/dev/null 2>"$work/kill.err" &
run=$!
if wait_soak "$work/kill.err" agent-2; then docker kill "${project}_agent-2_1" >/dev/null; fi
wait "$run"
rc=$?
summary="$(report "$work/kill.json" 'r["verdict"], r["agents"]["agent-2"]["status"], r["agents"]["agent-2"]["jobs"]["gpumemprof_cpu"]["phase"], r["agents"]["agent-1"]["status"], r["agents"]["agent-3"]["status"], any(d.startswith("agent-2: lost during gpumemprof_cpu soak") for d in r["failure_diagnostics"])' 2>/dev/null)"
[[ "$rc" == 6 && "$summary" == "inconclusive lost soak completed completed True" ]]
result $? "agent killed mid-soak: inconclusive by the deadline, the dead agent and its phase named" "exit $rc, $summary"
"${compose[@]}" start agent-2 >/dev/null 2>&1
wait_connected agent-1,agent-2,agent-3 60 || log "agent-2 did not come back"

# 3. An agent cut off the network past the heartbeat timeout, back within the deadline.
net="${project}_fleet"
timeout 180 "$fleetgate" run --coordinator "$url" --min-agents 3 --runtimes gpumemprof_cpu --mode soak \
    --profile nightly --deadline-seconds 120 --check --output "$work/net.json" >/dev/null 2>"$work/net.err" &
run=$!
lost=no
if wait_soak "$work/net.err" agent-1; then
    docker network disconnect "$net" "${project}_agent-1_1"
    for _ in $(seq 1 100); do
        state="$("$fleetgate" agents --coordinator "$url" --json 2>/dev/null | python3 -c 'import json,sys; print([a["state"] for a in json.load(sys.stdin) if a["agent_id"] == "agent-1"][0])' 2>/dev/null)"
        if [[ "$state" == lost ]]; then lost=yes; break; fi
        sleep 0.2
    done
    sleep 1
    docker network connect "$net" "${project}_agent-1_1"
fi
wait "$run"
rc=$?
summary="$(report "$work/net.json" 'r["verdict"], r["agents"]["agent-1"]["jobs"]["gpumemprof_cpu"]["checkpoints"] == r["runtimes"]["agent-1/gpumemprof_cpu"]["soak"]["rss_checkpoint_count"]' 2>/dev/null)"
[[ "$lost" == yes && "$rc" == 0 && "$summary" == "pass True" ]]
result $? "network cut past the heartbeat timeout: marked lost, results arrive once after reconnect" "lost=$lost exit $rc $summary"

# 4. The coordinator container restarted mid-run: a clear failure, never a hang; agents return.
start=$SECONDS
timeout 120 "$fleetgate" run --coordinator "$url" --min-agents 3 --runtimes gpumemprof_cpu --mode soak \
    --profile nightly --deadline-seconds 90 --output "$work/restart.json" >/dev/null 2>"$work/restart.err" &
run=$!
if wait_soak "$work/restart.err" agent-3; then docker restart --time 5 "${project}_coordinator_1" >/dev/null; fi
wait "$run"
rc=$?
took=$((SECONDS - start))
grep -q "coordinator at $url" "$work/restart.err"
said=$?
wait_connected agent-1,agent-2,agent-3 60
back=$?
[[ "$rc" == 7 && "$said" == 0 && "$took" -lt 100 && "$back" == 0 ]]
result $? "coordinator restarted mid-run: exit 7 with a clear error, agents reconnect" "exit $rc in $took s, agents back=$back"

# 5. An agent whose artifact volume is read-only: the job fails clearly, the agent stays up.
mkdir -p "$work/ro"
mapfile -t ro_secrets < <(agent_secrets agent-ro)
docker run -d --name "$project-ro" --network "$net" "${ro_secrets[@]}" -e FLEETGATE_AGENT_ID=agent-ro \
    -v "$work/ro:/var/lib/fleetgate/artifacts:ro" "fleetgate/agent:$FLEETGATE_TAG" >/dev/null
wait_connected agent-ro 60
timeout 120 "$fleetgate" run --coordinator "$url" --agents agent-ro --runtimes gpumemprof_cpu --mode soak \
    --check --output "$work/ro.json" >/dev/null 2>&1
rc=$?
summary="$(report "$work/ro.json" 'r["agents"]["agent-ro"]["jobs"]["gpumemprof_cpu"]["status"], "Read-only file system" in r["agents"]["agent-ro"]["jobs"]["gpumemprof_cpu"].get("reason", "")' 2>/dev/null)"
sleep 3
wait_connected agent-ro 10
still=$?
[[ "$rc" == 6 && "$summary" == "failed True" && "$still" == 0 ]]
result $? "read-only artifact volume: the job fails with the reason, the agent stays up" "exit $rc $summary up=$still"

# 6. An impostor container with the join token and agent-1's certificate, claiming another id:
#    refused, it stops and says why; agent-1 itself stays connected.
mapfile -t impostor_secrets < <(agent_secrets agent-1)
out="$(timeout 60 docker run --rm --network "$net" "${impostor_secrets[@]}" -e FLEETGATE_AGENT_ID=agent-9 \
    "fleetgate/agent:$FLEETGATE_TAG" 2>&1)"
rc=$?
grep -q "agent id agent-9 is not named by this connection's client certificate" <<<"$out"
said=$?
wait_connected agent-1 10
still=$?
[[ "$rc" == 1 && "$said" == 0 && "$still" == 0 ]]
result $? "impostor with another agent's certificate: refused with the reason, the real agent unaffected" "exit $rc said=$said up=$still"

echo "container-faults: $pass passed, $fail failed"
[[ "$fail" == 0 ]]
