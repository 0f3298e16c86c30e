#!/usr/bin/env bash
# Benchmarks chatstream on this machine next to a baseline that sets the
# physical limit, and writes docs/performance.md (tables) and docs/perf/*.svg
# (plots). One go, one machine, nothing to set up:
#
#   1. builds the release `chatstream` and `chatstream-loadtest` binaries
#   2. starts `chatstream dev` (embedded backends, mock model with zero token
#      delay) and `ws-echo-baseline` (a bare WebSocket server on the same
#      tokio/axum stack), each in a temporary directory, on free ports
#   3. drives both with chatstream-loadtest: max throughput (closed loop),
#      ack latency at half that rate (open loop), time to first token over
#      WebSocket and the OpenAI-compatible HTTP API, gRPC, and
#      idle-connection memory
#   4. Kafka mode, when a broker is given (BENCH_KAFKA=host:port) or tansu
#      is installed (then one is started on a free port in a temporary
#      directory and stopped at exit): the raw rdkafka producer baseline
#      (`chatstream-loadtest --transport kafka`) and chatstream's append path
#      (`chatstream dev --log kafka`, gateway ack over WebSocket), same broker,
#      message size and concurrency. Each gateway run gets a fresh topic and
#      a fresh process, so no router backlog from one run loads the next.
#   5. writes the report, keeping the hand-written analysis section of the
#      previous docs/performance.md
#
# Knobs (environment): BENCH_DURATION (10s), BENCH_CONNECTIONS (64),
# BENCH_IDLE_CONNECTIONS (20000), BENCH_KAFKA (host:port; default: start
# tansu if installed), BENCH_KAFKA_PARTITIONS (8), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DURATION=${BENCH_DURATION:-10s}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
IDLE=${BENCH_IDLE_CONNECTIONS:-20000}
KAFKA=${BENCH_KAFKA:-}
KAFKA_PARTITIONS=${BENCH_KAFKA_PARTITIONS:-8}
TANSU=$(command -v tansu || echo "$HOME/.cargo/bin/tansu")
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
CHATSTREAM=$TARGET_DIR/release/chatstream
LOADTEST=$TARGET_DIR/release/chatstream-loadtest
ECHO=$TARGET_DIR/release/ws-echo-baseline

step() { printf '\n==> %s\n' "$*" >&2; }

step "building release binaries"
cargo build --release --locked -p chatstream -p chatstream-loadtest

# Every idle connection is a file descriptor in both processes.
step "raising the open-file limit for $IDLE idle connections"
WANT_FILES=$((IDLE + 512))
ulimit -Hn "$WANT_FILES" 2>/dev/null || true
ulimit -n "$WANT_FILES" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$WANT_FILES" ]; then
    IDLE=$(($(ulimit -n) - 512))
    echo "open-file limit is $(ulimit -n); holding $IDLE idle connections instead" >&2
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# Waits until FILE has a line matching PATTERN and prints that line.
wait_for_line() {
    local file=$1 pattern=$2
    for _ in $(seq 1 300); do
        if grep -q "$pattern" "$file" 2>/dev/null; then
            grep -m1 "$pattern" "$file"
            return
        fi
        sleep 0.1
    done
    echo "timed out waiting for '$pattern' in $file:" >&2
    cat "$file" >&2
    exit 1
}

step "starting chatstream dev (embedded backends, mock model at zero token delay)"
mkdir -p "$WORK/chatstream"
(cd "$WORK/chatstream" && CHATSTREAM_MOCK_TOKEN_DELAY_MS=0 LOG_LEVEL=warn \
    exec "$CHATSTREAM" dev --data-dir data --http-port 0 --grpc-port 0 \
    >"$WORK/chatstream.out" 2>"$WORK/chatstream.err") &
CHATSTREAM_PID=$!
PIDS+=("$CHATSTREAM_PID")
WS_URL=$(wait_for_line "$WORK/chatstream.out" 'WebSocket' | awk '{print $2}')
GRPC_ADDR=$(wait_for_line "$WORK/chatstream.out" 'gRPC' | awk '{print $2}')
KEY_FILE=$WORK/chatstream/data/dev-api-key

step "starting ws-echo-baseline"
"$ECHO" --port 0 >"$WORK/echo.out" 2>&1 &
ECHO_PID=$!
PIDS+=("$ECHO_PID")
ECHO_URL=$(wait_for_line "$WORK/echo.out" 'listening' | awk '{print $4}')

mkdir -p docs/perf "$WORK/results"
: >"$WORK/commands"
# run NAME ARGS...: one load test, its JSON in $WORK/results and its plot in docs/perf.
run() {
    local name=$1
    shift
    step "$name"
    local cmd=("$LOADTEST" --label "$name" --json-out "$WORK/results/$name.json"
        --plot-out "docs/perf/$name.svg" "$@")
    echo "chatstream-loadtest ${cmd[*]:1}" | sed "s|$WORK|\$WORK|g" >>"$WORK/commands"
    "${cmd[@]}"
}
# http_root WS-URL: the gateway's HTTP root, e.g. http://127.0.0.1:8000.
http_root() {
    local root=${1%/api/*}
    echo "http://${root#ws://}"
}
# field NAME PYTHON-EXPRESSION: a number from a run's JSON (`r` is the report).
field() {
    python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print($2)" "$WORK/results/$1.json"
}

CHAT=(--ws-url "$WS_URL" --grpc-addr "$GRPC_ADDR" --api-key-file "$KEY_FILE" --duration "$DURATION" --quiet)
BASE=(--ws-url "$ECHO_URL" --api-key unused --ack-only --duration "$DURATION" --quiet)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# Runs that wait for replies go first: the router answers every message the
# ack-only runs append, and its backlog would delay the replies measured here.
run ws-full-turn-max-throughput "${CHAT[@]}" --connections "$CONNECTIONS" --wait-for completion
HALF_TURNS=$(field ws-full-turn-max-throughput 'max(1, int(r["throughput"]["replied_per_s"] / 2))')
run echo-open-loop-half-turns "${BASE[@]}" --connections "$CONNECTIONS" --rate "$HALF_TURNS"
run ws-ttft-open-loop "${CHAT[@]}" --connections "$CONNECTIONS" --rate "$HALF_TURNS"
run openai-ttft-open-loop "${CHAT[@]}" --transport openai --openai-url "$(http_root "$WS_URL")/v1" \
    --connections "$CONNECTIONS" --rate "$HALF_TURNS"
run echo-max-throughput "${BASE[@]}" --connections "$CONNECTIONS"
run ws-ack-max-throughput "${CHAT[@]}" --ack-only --connections "$CONNECTIONS"
HALF=$(field ws-ack-max-throughput 'max(1, int(r["throughput"]["acked_per_s"] / 2))')
run echo-open-loop-half "${BASE[@]}" --connections "$CONNECTIONS" --rate "$HALF"
run ws-ack-open-loop-half "${CHAT[@]}" --ack-only --connections "$CONNECTIONS" --rate "$HALF"
run ws-ack-max-throughput-no-idempotency-key "${CHAT[@]}" --ack-only --connections "$CONNECTIONS" --no-client-message-id
run grpc-ack-max-throughput "${CHAT[@]}" --transport grpc --ack-only --connections "$CONNECTIONS"
run echo-idle-connections "${BASE[@]}" --idle-connections "$IDLE" --connections 4 --rate 100 \
    --server-pid "$ECHO_PID"
run ws-idle-connections "${CHAT[@]}" --ack-only --idle-connections "$IDLE" --connections 4 --rate 100 \
    --server-pid "$CHATSTREAM_PID"

# stop PID: SIGTERM, then SIGKILL if it has not gone after 20 s.
stop() {
    kill "$1" 2>/dev/null || return 0
    for _ in $(seq 1 200); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
# The Kafka runs get the machine to themselves.
stop "$CHATSTREAM_PID"
stop "$ECHO_PID"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# wait_ready URL: polls an HTTP endpoint until it answers 200.
wait_ready() {
    for _ in $(seq 1 600); do
        if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$1" 2>/dev/null; then
            return
        fi
        sleep 0.1
    done
    echo "timed out waiting for $1 to be ready" >&2
    exit 1
}

KAFKA_BROKER_DESC=""
if [ -z "$KAFKA" ] && [ -x "$TANSU" ]; then
    step "starting a tansu broker (SQLite storage) in a temporary directory"
    KAFKA_PORT=$(free_port)
    KAFKA=127.0.0.1:$KAFKA_PORT
    mkdir -p "$WORK/tansu"
    (cd "$WORK/tansu" && exec "$TANSU" broker --listener-url "tcp://$KAFKA" \
        --advertised-listener-url "tcp://$KAFKA" --storage-engine sqlite://tansu.db \
        >"$WORK/tansu.log" 2>&1) &
    PIDS+=("$!")
    wait_for_line "$WORK/tansu.log" 'ready in' >/dev/null
    KAFKA_BROKER_DESC="$("$TANSU" --version) on loopback, SQLite storage, started by this script"
elif [ -n "$KAFKA" ]; then
    KAFKA_BROKER_DESC="the broker at BENCH_KAFKA=$KAFKA"
fi

if [ -n "$KAFKA" ]; then
    RUN_STAMP=$(date +%s)
    # new_topic NAME: creates a fresh topic (and its dead-letter topic).
    new_topic() {
        "$CHATSTREAM" topics create --bootstrap-servers "$KAFKA" --topic "$1" \
            --partitions "$KAFKA_PARTITIONS" >&2
    }
    # start_kafka_chatstream NAME: `chatstream dev --log kafka` on a fresh
    # topic, with consumer groups of its own (a group left behind by the
    # previous run must not rebalance this one); sets KTOPIC, KWS_URL,
    # KKEY_FILE and KPID.
    start_kafka_chatstream() {
        local topic=chatstream-bench-$1-$RUN_STAMP dir=$WORK/$1
        KTOPIC=$topic
        new_topic "$topic"
        mkdir -p "$dir"
        (cd "$dir" && CHATSTREAM_MOCK_TOKEN_DELAY_MS=0 LOG_LEVEL=warn \
            KAFKA_BOOTSTRAP_SERVERS=$KAFKA CHATSTREAM_KAFKA_TOPIC=$topic \
            CHATSTREAM_LOG_PARTITIONS=$KAFKA_PARTITIONS \
            CHATSTREAM_KAFKA_GROUP_PREFIX=$topic. \
            exec "$CHATSTREAM" dev --log kafka --data-dir data --http-port 0 --grpc-port 0 \
            >"$dir.out" 2>"$dir.err") &
        KPID=$!
        PIDS+=("$KPID")
        KWS_URL=$(wait_for_line "$dir.out" 'WebSocket' | awk '{print $2}')
        KKEY_FILE=$dir/data/dev-api-key
        wait_ready "$(http_root "$KWS_URL")/ready"
    }
    RAW_TOPIC=chatstream-bench-raw-$RUN_STAMP
    new_topic "$RAW_TOPIC"
    RAW=(--transport kafka --kafka-bootstrap-servers "$KAFKA" --kafka-topic "$RAW_TOPIC"
        --duration "$DURATION" --quiet)

    run kafka-producer-max-throughput "${RAW[@]}" --connections "$CONNECTIONS"
    start_kafka_chatstream gateway-max
    run kafka-ws-ack-max-throughput --ws-url "$KWS_URL" --api-key-file "$KKEY_FILE" \
        --duration "$DURATION" --quiet --ack-only --connections "$CONNECTIONS"
    # The same producer into chatstream's own topic while its router and
    # projector consume and answer it (records keyed by the `dev` tenant, so
    # the router answers them like the gateway's): what the broker does
    # under chatstream's consumers, without the gateway.
    run kafka-producer-live-topic-max-throughput --transport kafka --kafka-bootstrap-servers "$KAFKA" \
        --kafka-topic "$KTOPIC" --kafka-tenant dev --duration "$DURATION" --quiet --connections "$CONNECTIONS"
    stop "$KPID"
    KHALF=$(field kafka-ws-ack-max-throughput 'max(1, int(r["throughput"]["acked_per_s"] / 2))')
    run kafka-producer-open-loop-half "${RAW[@]}" --connections "$CONNECTIONS" --rate "$KHALF"
    start_kafka_chatstream gateway-half
    run kafka-ws-ack-open-loop-half --ws-url "$KWS_URL" --api-key-file "$KKEY_FILE" \
        --duration "$DURATION" --quiet --ack-only --connections "$CONNECTIONS" --rate "$KHALF"
    stop "$KPID"
else
    step "Kafka mode not run: no BENCH_KAFKA and no tansu at $TANSU"
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

step "writing docs/performance.md"
# The command line this run amounts to: the knobs that were set, then the script.
BENCH_COMMAND=""
for knob in BENCH_DURATION BENCH_CONNECTIONS BENCH_IDLE_CONNECTIONS BENCH_KAFKA BENCH_KAFKA_PARTITIONS; do
    if [ -n "${!knob:-}" ]; then BENCH_COMMAND+="$knob=${!knob} "; fi
done
export BENCH_COMMAND="${BENCH_COMMAND}scripts/bench.sh"
python3 - "$WORK" "$LOAD_BEFORE" "$LOAD_AFTER" "$DURATION" "$CONNECTIONS" "$IDLE" \
    "$KAFKA_BROKER_DESC" "$KAFKA_PARTITIONS" <<'PY'
import json, os, re, subprocess, sys, datetime

work, load_before, load_after, duration, connections, idle, broker, partitions = sys.argv[1:]
results = {name[:-5]: json.load(open(os.path.join(work, "results", name)))
           for name in os.listdir(os.path.join(work, "results"))}
commands = open(os.path.join(work, "commands")).read().strip()

def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"

def mem_total():
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            return f'{int(line.split()[1]) / 1024 / 1024:.1f} GiB'

def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
    except Exception:
        return "unknown"

def lat(r, metric):
    return r["latency_ms"].get(metric) or {}

def num(v, digits=2):
    return "—" if v is None else f"{v:,.{digits}f}"

def ratio(a, b):
    return "—" if not a or not b else f"{a / b:.2f}×"

# (mode, run, metric, baseline run, baseline metric, throughput field)
rows = [
    ("max throughput, acks (closed loop)", "ws-ack-max-throughput", "ack", "echo-max-throughput", "acked_per_s"),
    (f"acks at half that rate (open loop)", "ws-ack-open-loop-half", "ack", "echo-open-loop-half", "acked_per_s"),
    ("max throughput, acks, no idempotency key", "ws-ack-max-throughput-no-idempotency-key", "ack", "echo-max-throughput", "acked_per_s"),
    ("max throughput, full turns (closed loop, wait for reply): completion", "ws-full-turn-max-throughput", "completion", "echo-max-throughput", "replied_per_s"),
    ("time to first token, zero model delay (open loop, half the turn rate)", "ws-ttft-open-loop", "ttft", "echo-open-loop-half-turns", "replied_per_s"),
    ("OpenAI HTTP streamed completions, time to first token (open loop, half the turn rate)", "openai-ttft-open-loop", "ttft", "echo-open-loop-half-turns", "replied_per_s"),
    ("gRPC Converse, max throughput, acks (closed loop)", "grpc-ack-max-throughput", "ack", "echo-max-throughput", "acked_per_s"),
]

out = []
w = out.append
w("# chatstream performance\n")
w("Measured by [`scripts/bench.sh`](../scripts/bench.sh) with `chatstream-loadtest` "
  "([`loadtest/`](../loadtest)). Rerun it to refresh every number and plot on this page.\n")
w("## Machine and run\n")
w("| | |\n|---|---|")
w(f"| date | {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} |")
w(f"| commit | `{git_commit()}` (plus uncommitted changes, if any) |")
w(f"| CPU | {cpu_model()}, `nproc` = {os.cpu_count()} |")
w(f"| memory | {mem_total()} |")
w(f"| kernel | {os.uname().release} |")
w(f"| load average (1/5/15 min) before → after | {load_before} → {load_after} |")
w(f"| chatstream | `chatstream dev`: embedded log and store (redb, fsync per commit), in-process fan-out, mock model, `CHATSTREAM_MOCK_TOKEN_DELAY_MS=0` |")
w(f"| baseline | `ws-echo-baseline`: tokio + axum WebSocket server that parses each JSON frame and answers with an ack-like frame, TCP_NODELAY on; no auth, no log, no fsync |")
w(f"| load | {connections} connections, {duration} per run, 64-byte messages; the load generator runs on the same 2 cores |")
if broker:
    w(f"| Kafka broker | {broker}; topics with {partitions} partitions, one fresh topic per gateway run |")
w("")
w("## Results\n")
w("Latencies in milliseconds, measured from the *scheduled* send time (open loop) "
  "or the send (closed loop). Ratios are chatstream ÷ baseline: throughput ratios "
  "under 1 and latency ratios over 1 are how far chatstream is from what the "
  "stack can do on this machine. The baseline of each row is the echo server "
  "under the same offered load (same connections, same rate).\n")
w("| mode | throughput (msg/s) | p50 | p99 | p99.9 | errors | baseline throughput | baseline p50 | baseline p99 | baseline p99.9 | throughput ratio | p50 ratio | p99 ratio | p99.9 ratio |")
w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for mode, name, metric, base_name, tput in rows:
    r, b = results.get(name), results.get(base_name)
    if not r:
        continue
    l, bl = lat(r, metric), lat(b, "ack") if b else {}
    t = r["throughput"][tput]
    bt = b["throughput"]["acked_per_s"] if b else None
    w(f"| {mode} ({metric}) | {num(t, 0)} | {num(l.get('p50'))} | {num(l.get('p99'))} | {num(l.get('p999'))} | "
      f"{r['failed']} | {num(bt, 0)} | {num(bl.get('p50'))} | {num(bl.get('p99'))} | {num(bl.get('p999'))} | "
      f"{ratio(t, bt)} | {ratio(l.get('p50'), bl.get('p50'))} | {ratio(l.get('p99'), bl.get('p99'))} | {ratio(l.get('p999'), bl.get('p999'))} |")
w("")
full = results.get("ws-full-turn-max-throughput")
ttft = results.get("ws-ttft-open-loop")
if full and ttft:
    w(f"The full-turn and time-to-first-token runs ran first, on the fresh server, and subscribe to their conversations and follow every "
      f"message to its committed reply. At max throughput: {num(full['throughput']['acked_per_s'], 0)} acks/s, "
      f"{num(full['throughput']['replied_per_s'], 0)} replies/s, first token p99 "
      f"{num(lat(full, 'ttft').get('p99'))} ms. At {ttft['mode'].get('rate', 0):,.0f} msg/s (open loop): ack p99 "
      f"{num(lat(ttft, 'ack').get('p99'))} ms, first token p99 {num(lat(ttft, 'ttft').get('p99'))} ms, "
      f"completion p99 {num(lat(ttft, 'completion').get('p99'))} ms.\n")

openai = results.get("openai-ttft-open-loop")
if openai:
    w(f"Over the OpenAI-compatible HTTP API (each request a streamed `POST /v1/chat/completions` on a new conversation; "
      f"ack = response headers, which the gateway sends once the message is in the log): at "
      f"{openai['mode'].get('rate', 0):,.0f} msg/s, ack p99 {num(lat(openai, 'ack').get('p99'))} ms, first token p99 "
      f"{num(lat(openai, 'ttft').get('p99'))} ms, completion p99 {num(lat(openai, 'completion').get('p99'))} ms, "
      f"{openai['failed']} failed.\n")

kafka_rows = [
    ("max throughput (closed loop, 1 in flight per connection)", "kafka-ws-ack-max-throughput", "kafka-producer-max-throughput"),
    ("at half the gateway's max rate (open loop)", "kafka-ws-ack-open-loop-half", "kafka-producer-open-loop-half"),
    ("max throughput, against the raw producer into chatstream's live topic (its processors consuming)", "kafka-ws-ack-max-throughput", "kafka-producer-live-topic-max-throughput"),
]
w("### Kafka mode: gateway ack against the raw producer\n")
if any(results.get(name) for _, name, _ in kafka_rows):
    w("Same broker, same run, same message size and the same number of messages in flight. "
      "**Raw producer**: `chatstream-loadtest --transport kafka`, one rdkafka producer with chatstream's settings "
      "(idempotent, `acks=all`, murmur2 key partitioning, one tenant key) producing encoded `UserMessageSent` "
      "events with their CloudEvents headers; latency is send → delivery report. **chatstream**: "
      "`chatstream dev --log kafka` on a fresh topic, WebSocket clients of the one `dev` tenant, latency is "
      "send → ack frame (the gateway acks after the delivery report and its idempotency bookkeeping); "
      "its router and projector consume and answer on the same broker while it runs. "
      "Ratios are chatstream ÷ raw producer.\n")
    w("| mode | raw producer (msg/s) | p50 | p99 | p99.9 | gateway ack (msg/s) | p50 | p99 | p99.9 | errors (gateway + raw) | throughput ratio | p50 ratio | p99 ratio | p99.9 ratio |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode, name, base_name in kafka_rows:
        r, b = results.get(name), results.get(base_name)
        if not r or not b:
            continue
        l, bl = lat(r, "ack"), lat(b, "ack")
        t, bt = r["throughput"]["acked_per_s"], b["throughput"]["acked_per_s"]
        w(f"| {mode} | {num(bt, 0)} | {num(bl.get('p50'))} | {num(bl.get('p99'))} | {num(bl.get('p999'))} | "
          f"{num(t, 0)} | {num(l.get('p50'))} | {num(l.get('p99'))} | {num(l.get('p999'))} | {r['failed']} + {b['failed']} | "
          f"{ratio(t, bt)} | {ratio(l.get('p50'), bl.get('p50'))} | {ratio(l.get('p99'), bl.get('p99'))} | {ratio(l.get('p999'), bl.get('p999'))} |")
    w("")
else:
    w("Not run: no broker (set `BENCH_KAFKA=host:port`, or install tansu as `../shared/SERVICES.md` says).\n")

w("### Idle connections\n")
w("Each run holds idle, authenticated WebSocket connections while 4 more connections send 100 msg/s, "
  "and samples the server's resident memory from `/proc/<pid>/status` every 250 ms.\n")
w("| server | idle connections held | failed | RSS before | peak RSS | VmHWM (kernel high-water mark) | per connection |")
w("|---|---:|---:|---:|---:|---:|---:|")
for label, name in [("chatstream dev", "ws-idle-connections"), ("ws-echo-baseline", "echo-idle-connections")]:
    r = results.get(name)
    if not r:
        continue
    ic, m = r.get("idle_connections") or {}, r.get("server_memory") or {}
    mib = lambda b: "—" if b is None else f"{b / 2**20:,.1f} MiB"
    per = "—"
    if m.get("peak_rss_bytes") and m.get("rss_at_start_bytes") and ic.get("held"):
        per = f'{(m["peak_rss_bytes"] - m["rss_at_start_bytes"]) / ic["held"] / 1024:,.1f} KiB'
    w(f"| {label} | {ic.get('held', 0):,} of {ic.get('requested', 0):,} | {ic.get('failed', 0)} | "
      f"{mib(m.get('rss_at_start_bytes'))} | {mib(m.get('peak_rss_bytes'))} | {mib(m.get('vm_hwm_bytes'))} | {per} |")
w("")

w("### Against the targets of issue 7\n")
w("| target | measured | verdict |\n|---|---|---|")
def verdict(ok, text):
    return ("met" if ok else "missed") + (f": {text}" if text else "")
r = results.get("ws-ack-max-throughput")
if r:
    t = r["throughput"]["acked_per_s"]
    w(f"| ≥ 20,000 user messages/s acked (embedded) | {t:,.0f} msg/s | {verdict(t >= 20000, '' if t >= 20000 else f'{20000 / t:.1f}× short')} |")
r = results.get("ws-ack-open-loop-half")
if r and lat(r, "ack"):
    p = lat(r, "ack")["p99"]
    rate = r["mode"]["rate"]
    w(f"| ack p99 < 2 ms at half that rate | {p:,.2f} ms at {rate:,.0f} msg/s (half of the measured max, not of 20,000) | {verdict(p < 2, '' if p < 2 else f'{p / 2:.1f}× over')} |")
r = results.get("ws-ttft-open-loop")
if r and lat(r, "ttft"):
    p = lat(r, "ttft")["p99"]
    w(f"| time to first token p99 < 5 ms, mock model at zero delay | {p:,.2f} ms at {r['mode']['rate']:,.0f} msg/s | {verdict(p < 5, '' if p < 5 else f'{p / 5:.1f}× over')} |")
r = results.get("ws-idle-connections")
if r and r.get("server_memory", {}).get("peak_rss_bytes"):
    held = r["idle_connections"]["held"]
    peak = r["server_memory"]["peak_rss_bytes"]
    ok = held >= 20000 and peak < 2**30
    w(f"| ≥ 20,000 idle WebSocket connections under 1 GiB RSS | {held:,} held, peak RSS {peak / 2**20:,.0f} MiB | {verdict(ok, '' if ok else 'see the table above')} |")
r, b = results.get("kafka-ws-ack-max-throughput"), results.get("kafka-producer-max-throughput")
if r and b:
    q = r["throughput"]["acked_per_s"] / b["throughput"]["acked_per_s"]
    w(f"| Kafka: gateway ack throughput ≥ 80 % of the raw producer's | {q:.0%} ({r['throughput']['acked_per_s']:,.0f} vs {b['throughput']['acked_per_s']:,.0f} msg/s) | {verdict(q >= 0.8, '' if q >= 0.8 else f'{0.8 / q:.1f}× short')} |")
else:
    w("| Kafka: gateway ack throughput ≥ 80 % of the raw producer's | not run | no broker |")
r, b = results.get("kafka-ws-ack-open-loop-half"), results.get("kafka-producer-open-loop-half")
if r and b and lat(r, "ack") and lat(b, "ack"):
    q = lat(r, "ack")["p99"] / lat(b, "ack")["p99"]
    w(f"| Kafka: ack p99 ≤ 1.25× the raw producer's delivery p99 (same offered load) | {q:.2f}× ({lat(r, 'ack')['p99']:,.2f} vs {lat(b, 'ack')['p99']:,.2f} ms at {r['mode']['rate']:,.0f} msg/s) | {verdict(q <= 1.25, '' if q <= 1.25 else f'{q / 1.25:.1f}× over')} |")
else:
    w("| Kafka: ack p99 ≤ 1.25× the raw producer's delivery p99 | not run | no broker |")
w("")

w("## Plots\n")
w("Each plot shows latency over time (per-second p50 and p99 by scheduled send time) and the whole run's latency by percentile.\n")
for name in sorted(results):
    w(f"- [{name}](perf/{name}.svg)")
w("")
w("![chatstream max ack throughput](perf/ws-ack-max-throughput.svg)\n")
w("![chatstream time to first token](perf/ws-ttft-open-loop.svg)\n")
if results.get("kafka-ws-ack-max-throughput"):
    w("![chatstream on Kafka, gateway ack](perf/kafka-ws-ack-max-throughput.svg)\n")
    w("![raw rdkafka producer, delivery report](perf/kafka-producer-max-throughput.svg)\n")

w("## Exact commands\n")
w("`scripts/bench.sh` ran these after starting the servers on free ports ($WORK is its temporary directory). "
  "The whole run: `" + os.environ.get("BENCH_COMMAND", "scripts/bench.sh") + "`.\n")
w("```sh")
w(commands)
w("```\n")

# Keep the hand-written analysis of the previous report.
marker_start, marker_end = "<!-- analysis:start -->", "<!-- analysis:end -->"
analysis = f"{marker_start}\n## Analysis\n\n(Not written yet for this run.)\n{marker_end}"
try:
    previous = open("docs/performance.md").read()
    m = re.search(re.escape(marker_start) + ".*?" + re.escape(marker_end), previous, re.S)
    if m:
        analysis = m.group(0)
except FileNotFoundError:
    pass
w(analysis)
open("docs/performance.md", "w").write("\n".join(out) + "\n")
PY
echo "wrote docs/performance.md and docs/perf/*.svg" >&2
