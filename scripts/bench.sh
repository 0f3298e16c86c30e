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
#      ack latency at half that rate (open loop), time to first token,
#      gRPC, and idle-connection memory
#   4. writes the report, keeping the hand-written analysis section of the
#      previous docs/performance.md
#
# Knobs (environment): BENCH_DURATION (10s), BENCH_CONNECTIONS (64),
# BENCH_IDLE_CONNECTIONS (20000), CARGO_TARGET_DIR.
# Kafka mode is not built yet, so neither it nor its raw-producer baseline runs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DURATION=${BENCH_DURATION:-10s}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
IDLE=${BENCH_IDLE_CONNECTIONS:-20000}
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

step "Kafka mode is not built yet: no Kafka gateway run and no raw rdkafka producer baseline"

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
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

step "writing docs/performance.md"
python3 - "$WORK" "$LOAD_BEFORE" "$LOAD_AFTER" "$DURATION" "$CONNECTIONS" "$IDLE" <<'PY'
import json, os, re, subprocess, sys, datetime

work, load_before, load_after, duration, connections, idle = sys.argv[1:]
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
w("| Kafka: gateway ack throughput ≥ 80 % of the raw producer's, ack p99 ≤ 1.25× its delivery p99 | not run | Kafka mode is not built yet, so there is no Kafka gateway and no raw-producer baseline to run |")
w("")

w("## Plots\n")
w("Each plot shows latency over time (per-second p50 and p99 by scheduled send time) and the whole run's latency by percentile.\n")
for name in sorted(results):
    w(f"- [{name}](perf/{name}.svg)")
w("")
w("![chatstream max ack throughput](perf/ws-ack-max-throughput.svg)\n")
w("![chatstream time to first token](perf/ws-ttft-open-loop.svg)\n")

w("## Exact commands\n")
w("`scripts/bench.sh` ran these after starting the servers on free ports ($WORK is its temporary directory):\n")
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
