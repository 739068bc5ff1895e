#!/usr/bin/env bash
# Side-by-side load runs: polymq against the reference broker of each protocol, on this machine,
# in the same run, over 127.0.0.1 only.
#
#   bench/compare.sh                      build (release), start the brokers, run, print a table
#   BENCH_PORT_OFFSET=1000 bench/compare.sh    shift every port (when the defaults are taken)
#   BENCH_SKIP_BUILD=1 bench/compare.sh        use the release binaries already built (in
#                                              $CARGO_TARGET_DIR, else target/)
#   BENCH_POLYMQ=/path/to/polymq bench/compare.sh   run this broker binary instead
#   BENCH_ONLY=zmtp bench/compare.sh           run only these protocols (comma-separated:
#                                              nats, mqtt, nsq, zmtp; default all)
#
# References: nats-server, mosquitto, and libzmq's stock devices (bench/zmq_proxy.py: XSUB/XPUB
# forwarder, PULL/PUSH streamer, ROUTER/DEALER queue). No nsqd is available here, so NSQ runs
# against polymq alone. Queue limits that would drop messages in a burst are raised equally on
# both sides (MQTT queued messages, ZMQ high-water marks); everything else keeps its defaults.
#
# Every JSON line goes to bench/results/<date>.jsonl, tagged with this run's id and a label;
# the table at the end is built from this run's lines. Only the processes started here are
# stopped (their PIDs are recorded; an EXIT trap stops them).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OFFSET="${BENCH_PORT_OFFSET:-0}"
port() { echo $(($1 + OFFSET)); }

# polymq
P_NATS=$(port 14222) P_MQTT=$(port 11883) P_NSQ=$(port 14150) P_NSQ_HTTP=$(port 14151)
P_ZMTP=$(port 15555) P_ADMIN=$(port 18222)
# references
R_NATS=$(port 24222) R_MQTT=$(port 21883)
R_FWD_FRONT=$(port 25555) R_FWD_BACK=$(port 25556)
R_STREAM_FRONT=$(port 25557) R_STREAM_BACK=$(port 25558)
R_QUEUE_FRONT=$(port 25559) R_QUEUE_BACK=$(port 25560)

# Message counts: throughput runs, fan-out (per publisher; 8 receivers each), fan-in (per
# publisher; 8 publishers), latency runs.
N="${BENCH_MESSAGES:-100000}"
N_FANOUT=$((N / 2))
N_FANIN=$((N / 8))
N_LATENCY="${BENCH_LATENCY_MESSAGES:-5000}"
RATE="${BENCH_RATE:-1000}"
RUN_TIMEOUT=300

RESULTS_DIR="$ROOT/bench/results"
RESULTS="$RESULTS_DIR/$(date -u +%Y-%m-%d).jsonl"
RUN_ID="$(date -u +%Y%m%dT%H%M%SZ)-$$"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BENCH="$TARGET_DIR/release/polymq-bench"
POLYMQ="${BENCH_POLYMQ:-$TARGET_DIR/release/polymq}"

TMP="$(mktemp -d)"
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

require_free() {
    local p
    for p in "$@"; do
        if listening "$p"; then
            echo "port $p on 127.0.0.1 is taken; set BENCH_PORT_OFFSET to shift every port" >&2
            exit 1
        fi
    done
}

# Waits (at most 10 s) until something listens on each port.
wait_listening() {
    local p i
    for p in "$@"; do
        for ((i = 0; i < 100; i++)); do
            listening "$p" && continue 2
            sleep 0.1
        done
        echo "nothing listens on 127.0.0.1:$p; logs are in $TMP" >&2
        tail -n 20 "$TMP"/*.log >&2 || true
        exit 1
    done
}

# start NAME COMMAND...: runs COMMAND in the background, logging to $TMP/NAME.log.
start() {
    local name=$1
    shift
    (cd "$TMP" && exec "$@") >"$TMP/$name.log" 2>&1 &
    PIDS+=("$!")
}

# wanted PROTOCOL: true when BENCH_ONLY is unset or names PROTOCOL.
wanted() {
    [[ -z "${BENCH_ONLY:-}" || ",${BENCH_ONLY}," == *",$1,"* ]]
}

find_tool() {
    command -v "$1" 2>/dev/null || { [[ -x "/usr/sbin/$1" ]] && echo "/usr/sbin/$1"; } || true
}

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    echo "building (release)..." >&2
    (cd "$ROOT" && cargo build --release -p polymq -p polymq-bench)
fi
for binary in "$POLYMQ" "$BENCH"; do
    [[ -x "$binary" ]] || { echo "$binary is missing: build it first" >&2; exit 1; }
done

NATS_SERVER="" MOSQUITTO="" HAVE_PYZMQ=false
wanted nats && NATS_SERVER="$(find_tool nats-server)"
wanted mqtt && MOSQUITTO="$(find_tool mosquitto)"
wanted zmtp && python3 -c 'import zmq' 2>/dev/null && HAVE_PYZMQ=true

require_free "$P_NATS" "$P_MQTT" "$P_NSQ" "$P_NSQ_HTTP" "$P_ZMTP" "$P_ADMIN"
start polymq "$POLYMQ" \
    --set "nats.listen=127.0.0.1:$P_NATS" \
    --set "mqtt.listen=127.0.0.1:$P_MQTT" \
    --set "nsq.tcp_listen=127.0.0.1:$P_NSQ" \
    --set "nsq.http_listen=127.0.0.1:$P_NSQ_HTTP" \
    --set "zmtp.listen=127.0.0.1:$P_ZMTP" \
    --set "admin.listen=127.0.0.1:$P_ADMIN" \
    --set "storage.backend=memory" \
    --set "mqtt.max_queued_messages=1000000" \
    --set "zmtp.sndhwm=1000000"
wait_listening "$P_NATS" "$P_MQTT" "$P_NSQ" "$P_ZMTP"

if [[ -n "$NATS_SERVER" ]]; then
    require_free "$R_NATS"
    start nats-server "$NATS_SERVER" -a 127.0.0.1 -p "$R_NATS"
    wait_listening "$R_NATS"
fi
if [[ -n "$MOSQUITTO" ]]; then
    require_free "$R_MQTT"
    cat >"$TMP/mosquitto.conf" <<EOF
listener $R_MQTT 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 1000000
EOF
    start mosquitto "$MOSQUITTO" -c "$TMP/mosquitto.conf"
    wait_listening "$R_MQTT"
fi
if $HAVE_PYZMQ; then
    require_free "$R_FWD_FRONT" "$R_FWD_BACK" "$R_STREAM_FRONT" "$R_STREAM_BACK" \
        "$R_QUEUE_FRONT" "$R_QUEUE_BACK"
    start zmq-forwarder python3 "$ROOT/bench/zmq_proxy.py" forwarder "$R_FWD_FRONT" "$R_FWD_BACK"
    start zmq-streamer python3 "$ROOT/bench/zmq_proxy.py" streamer "$R_STREAM_FRONT" "$R_STREAM_BACK"
    start zmq-queue python3 "$ROOT/bench/zmq_proxy.py" queue "$R_QUEUE_FRONT" "$R_QUEUE_BACK"
    wait_listening "$R_FWD_FRONT" "$R_FWD_BACK" "$R_STREAM_FRONT" "$R_STREAM_BACK" \
        "$R_QUEUE_FRONT" "$R_QUEUE_BACK"
fi

mkdir -p "$RESULTS_DIR"

# run LABEL REFERENCE-TARGET|"" BENCH-ARGS...: one scenario against polymq (and the reference);
# appends its tagged JSON lines (or an error line) to $RESULTS.
run() {
    local label=$1 reference=$2
    shift 2
    local targets=(--target "polymq=$POLYMQ_TARGET")
    if [[ -n "$reference" ]]; then
        targets+=(--target "$reference")
    fi
    echo "-- $label" >&2
    local status=0
    timeout "$RUN_TIMEOUT" "$BENCH" "$@" --timeout-secs 30 "${targets[@]}" \
        >"$TMP/run.out" 2>"$TMP/run.err" || status=$?
    python3 - "$RUN_ID" "$label" "$status" "$TMP/run.out" "$TMP/run.err" >>"$RESULTS" <<'EOF'
import json, sys
run, label, status, out, err = sys.argv[1:6]
for line in open(out):
    line = line.strip()
    if line:
        record = json.loads(line)
        record.update(run=run, label=label)
        print(json.dumps(record))
if status != "0":
    tail = open(err).read().strip().splitlines()[-3:]
    print(json.dumps({"run": run, "label": label, "error": f"exit {status}: {' / '.join(tail)}"}))
EOF
}

# NATS
if wanted nats; then
POLYMQ_TARGET="127.0.0.1:$P_NATS"
REF=""
[[ -z "$NATS_SERVER" ]] || REF="nats-server=127.0.0.1:$R_NATS"
run "NATS 1:1 16 B" "$REF" --protocol nats --size 16 --messages "$N"
run "NATS 1:1 256 B" "$REF" --protocol nats --size 256 --messages "$N"
run "NATS fan-out 1→8" "$REF" --protocol nats --messages "$N_FANOUT" --subscribers 8
run "NATS fan-in 8→1" "$REF" --protocol nats --messages "$N_FANIN" --publishers 8
run "NATS req/rep latency" "$REF" --protocol nats --scenario reqrep --messages "$N_LATENCY"
fi

# MQTT at QoS 0 and QoS 1
if wanted mqtt; then
POLYMQ_TARGET="127.0.0.1:$P_MQTT"
REF=""
[[ -z "$MOSQUITTO" ]] || REF="mosquitto=127.0.0.1:$R_MQTT"
for proto in mqtt mqtt-qos1; do
    name="MQTT QoS0"
    [[ $proto == mqtt-qos1 ]] && name="MQTT QoS1"
    run "$name 1:1 16 B" "$REF" --protocol "$proto" --size 16 --messages "$N"
    run "$name 1:1 256 B" "$REF" --protocol "$proto" --size 256 --messages "$N"
    run "$name fan-out 1→8" "$REF" --protocol "$proto" --messages "$N_FANOUT" --subscribers 8
    run "$name fan-in 8→1" "$REF" --protocol "$proto" --messages "$N_FANIN" --publishers 8
    run "$name latency @${RATE}/s" "$REF" --protocol "$proto" --messages "$N_LATENCY" --rate "$RATE"
done
fi

# NSQ (polymq only)
if wanted nsq; then
POLYMQ_TARGET="127.0.0.1:$P_NSQ"
run "NSQ PUB 1:1 16 B" "" --protocol nsq --size 16 --messages "$N"
run "NSQ PUB 1:1 256 B" "" --protocol nsq --size 256 --messages "$N"
run "NSQ MPUB×100 1:1 16 B" "" --protocol nsq --size 16 --messages "$N" --batch 100
run "NSQ MPUB×100 1:1 256 B" "" --protocol nsq --size 256 --messages "$N" --batch 100
run "NSQ 2 channels fan-out" "" --protocol nsq --messages "$N" --subscribers 2
run "NSQ 1 channel, 4 consumers" "" --protocol nsq --scenario queue --messages "$N" --subscribers 4
fi

# ZMTP
if wanted zmtp; then
# ZMTP: the reference is a libzmq device per pattern, each with its own two ports.
POLYMQ_TARGET="127.0.0.1:$P_ZMTP"
zmq_ref() { if $HAVE_PYZMQ; then echo "libzmq=127.0.0.1:$1,$2"; fi; }
REF="$(zmq_ref "$R_FWD_FRONT" "$R_FWD_BACK")"
run "ZMTP PUB→SUB 1:1" "$REF" --protocol zmtp --messages "$N"
run "ZMTP PUB→SUB fan-out 1→8" "$REF" --protocol zmtp --messages "$N_FANOUT" --subscribers 8
REF="$(zmq_ref "$R_STREAM_FRONT" "$R_STREAM_BACK")"
run "ZMTP PUSH→PULL 4 workers" "$REF" --protocol zmtp --scenario queue --messages "$N" --subscribers 4
REF="$(zmq_ref "$R_QUEUE_FRONT" "$R_QUEUE_BACK")"
run "ZMTP REQ/REP latency" "$REF" --protocol zmtp --scenario reqrep --messages "$N_LATENCY"
fi

echo >&2
echo "results: $RESULTS (run $RUN_ID)" >&2
python3 - "$RESULTS" "$RUN_ID" <<'EOF'
import json, sys
path, run = sys.argv[1:3]
rows = {}
for line in open(path):
    record = json.loads(line)
    if record.get("run") == run and ("target" in record or "error" in record):
        rows.setdefault(record["label"], []).append(record)

def rate(r):
    text = f"{r['msgs_per_s']:,.0f}"
    if not r["complete"]:
        text += f" (only {r['received']}/{r['expected']})"
    return text

print("| scenario | polymq msg/s | reference | reference msg/s | ratio | polymq p99 µs | reference p99 µs |")
print("|---|---:|---|---:|---:|---:|---:|")
notes = []
for label, records in rows.items():
    notes += [f"- {label}: {r['error']}" for r in records if "error" in r]
    runs = [r for r in records if "target" in r]
    mine = next((r for r in runs if r["target"] == "polymq"), None)
    ref = next((r for r in runs if r["target"] != "polymq"), None)
    cells = [label]
    cells.append(rate(mine) if mine else "error")
    cells.append(ref["target"] if ref else "–")
    cells.append(rate(ref) if ref else "–")
    ratio = mine and ref and ref["msgs_per_s"] > 0
    cells.append(f"{mine['msgs_per_s'] / ref['msgs_per_s']:.2f}" if ratio else "–")
    cells.append(f"{mine['latency_us']['p99']:,.0f}" if mine else "–")
    cells.append(f"{ref['latency_us']['p99']:,.0f}" if ref else "–")
    print("| " + " | ".join(cells) + " |")
if notes:
    print()
    print("\n".join(notes))
EOF

# Memory per idle MQTT connection, on fresh brokers so the baseline is clean.
IDLE_CONNECTIONS="${BENCH_IDLE_CONNECTIONS:-10000}"
if wanted mqtt && (( $(ulimit -n) > IDLE_CONNECTIONS + 100 )); then
    I_POLYMQ=$((31883 + OFFSET))
    I_MOSQUITTO=$((31884 + OFFSET))
    require_free "$I_POLYMQ" "$I_MOSQUITTO"
    start polymq-idle "$POLYMQ" --set "mqtt.listen=127.0.0.1:$I_POLYMQ" --set nats.enabled=false \
        --set nsq.enabled=false --set zmtp.enabled=false --set admin.enabled=false \
        --set log.level=warn
    IDLE_PIDS=("${PIDS[-1]}")
    IDLE_TARGETS=("polymq=127.0.0.1:$I_POLYMQ")
    if [[ -n "$MOSQUITTO" ]]; then
        printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_connections -1\n' "$I_MOSQUITTO" \
            >"$TMP/mosquitto-idle.conf"
        start mosquitto-idle "$MOSQUITTO" -c "$TMP/mosquitto-idle.conf"
        IDLE_PIDS+=("${PIDS[-1]}")
        IDLE_TARGETS+=("mosquitto=127.0.0.1:$I_MOSQUITTO")
    fi
    wait_listening "$I_POLYMQ"
    echo >&2
    echo "-- MQTT memory per idle connection ($IDLE_CONNECTIONS connections)" >&2
    for i in "${!IDLE_PIDS[@]}"; do
        target="${IDLE_TARGETS[$i]}"
        [[ "${target%%=*}" == mosquitto ]] && wait_listening "$I_MOSQUITTO"
        python3 "$ROOT/bench/mqtt_idle.py" --pid "${IDLE_PIDS[$i]}" --addr "${target#*=}" \
            --target "${target%%=*}" --connections "$IDLE_CONNECTIONS" | tee -a "$RESULTS"
    done
elif wanted mqtt; then
    echo "skipping the idle-connection measurement: ulimit -n is below $IDLE_CONNECTIONS" >&2
fi
