#!/usr/bin/env bash
# Benchmarks chatstream on this machine next to a baseline that sets the
# physical limit, and writes docs/performance.md (tables) and docs/perf/*.svg
# (plots). One go, one machine, nothing to set up:
#
#   1. builds the release `chatstream` and `chatstream-loadtest` binaries
#   2. full turns at realistic model latency (`turns`): for each number N of
#      conversations (64, 256, 1,024) a fresh `chatstream dev` (embedded
#      backends, fresh data directory) whose mock model waits 200 ms before
#      the first token and 20 ms per token, driven by N WebSocket
#      connections of the `dev` tenant, each with its own conversation and
#      one message in flight (closed loop, next message after the reply
#      completes). Reports turns/s against Little's law (N / the model's own
#      turn time) and the time to first token the platform adds over the
#      model's own.
#   3. the zero-delay suite (`suite`): starts `chatstream dev` (embedded
#      backends, mock model with zero token delay) and `ws-echo-baseline`
#      (a bare WebSocket server on the same tokio/axum stack), each in a
#      temporary directory, on free ports, and drives both with
#      chatstream-loadtest: max throughput (closed loop), ack latency at half
#      that rate (open loop), time to first token over WebSocket and the
#      OpenAI-compatible HTTP API, gRPC, and idle-connection memory
#   4. Kafka mode (part of `suite`), when a broker is given
#      (BENCH_KAFKA=host:port) or tansu is installed (then one is started on
#      a free port in a temporary directory and stopped at exit): the raw
#      rdkafka producer baseline (`chatstream-loadtest --transport kafka`)
#      and chatstream's append path (`chatstream dev --log kafka`, gateway
#      ack over WebSocket), same broker, message size and concurrency. Each
#      gateway run gets a fresh topic and a fresh process, so no router
#      backlog from one run loads the next.
#   5. the peer, side by side (`peer`): `mock-provider` (an OpenAI-compatible
#      model server of exactly known latency, from loadtest/) driven three
#      ways with the same load (`chatstream-loadtest --transport openai`,
#      streamed chat completions, N streams each with one request in flight,
#      closed loop): directly (the limit), through the LiteLLM proxy (installed
#      into a venv kept at ~/.cache/chatstream-litellm when missing), and
#      through `chatstream dev` with the mock as its `openai`-kind provider.
#      Each gateway run gets a fresh gateway process. Reports requests/s,
#      time to first token and what each gateway adds over the direct run.
#   6. writes the report, keeping the hand-written analysis section of the
#      previous docs/performance.md, and the previous section of any part
#      that did not run this time
#
# Knobs (environment):
#   BENCH_ONLY               what to run, comma-separated: `turns`, `suite`,
#                            `peer` (default: all three)
#   BENCH_DURATION (10s), BENCH_CONNECTIONS (64), BENCH_IDLE_CONNECTIONS (20000),
#   BENCH_KAFKA (host:port; default: start tansu if installed),
#   BENCH_KAFKA_PARTITIONS (8), CARGO_TARGET_DIR
#   BENCH_TURN_CONVERSATIONS ("64 256 1024"), BENCH_TURNS_DURATION
#   (BENCH_DURATION), BENCH_FIRST_TOKEN_DELAY_MS (200), BENCH_TOKEN_DELAY_MS (20),
#   BENCH_TURNS_MAX_IN_FLIGHT_PER_TENANT (the largest of the conversation
#   counts: all conversations of the one tenant may be in flight; the
#   product default, 256, caps one tenant at 256 turns in flight)
#   BENCH_PEER_STREAMS ("64 256 1024"), BENCH_PEER_DURATION (BENCH_DURATION),
#   BENCH_PEER_FIRST_TOKEN_DELAY_MS (BENCH_FIRST_TOKEN_DELAY_MS),
#   BENCH_PEER_TOKEN_DELAY_MS (BENCH_TOKEN_DELAY_MS), BENCH_PEER_TOKENS (12),
#   BENCH_PEER_ZERO_DELAY_STREAMS ("64": the same three targets with the mock
#   at zero delay, i.e. each one's own ceiling; empty to skip),
#   BENCH_PEER_LITELLM_WORKERS (1, LiteLLM's default),
#   BENCH_LITELLM_VENV (~/.cache/chatstream-litellm)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DURATION=${BENCH_DURATION:-10s}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
IDLE=${BENCH_IDLE_CONNECTIONS:-20000}
KAFKA=${BENCH_KAFKA:-}
KAFKA_PARTITIONS=${BENCH_KAFKA_PARTITIONS:-8}
TANSU=$(command -v tansu || echo "$HOME/.cargo/bin/tansu")
ONLY=${BENCH_ONLY:-turns,suite,peer}
TURN_CONVERSATIONS=${BENCH_TURN_CONVERSATIONS:-64 256 1024}
TURNS_DURATION=${BENCH_TURNS_DURATION:-$DURATION}
FIRST_TOKEN_DELAY_MS=${BENCH_FIRST_TOKEN_DELAY_MS:-200}
TOKEN_DELAY_MS=${BENCH_TOKEN_DELAY_MS:-20}
MAX_TURN_CONVERSATIONS=$(printf '%s\n' $TURN_CONVERSATIONS | sort -n | tail -1)
TURNS_TENANT_BOUND=${BENCH_TURNS_MAX_IN_FLIGHT_PER_TENANT:-$MAX_TURN_CONVERSATIONS}
PEER_STREAMS=${BENCH_PEER_STREAMS:-64 256 1024}
PEER_ZERO_DELAY_STREAMS=${BENCH_PEER_ZERO_DELAY_STREAMS-64}
PEER_DURATION=${BENCH_PEER_DURATION:-$DURATION}
PEER_FIRST_TOKEN_DELAY_MS=${BENCH_PEER_FIRST_TOKEN_DELAY_MS:-$FIRST_TOKEN_DELAY_MS}
PEER_TOKEN_DELAY_MS=${BENCH_PEER_TOKEN_DELAY_MS:-$TOKEN_DELAY_MS}
PEER_TOKENS=${BENCH_PEER_TOKENS:-12}
PEER_LITELLM_WORKERS=${BENCH_PEER_LITELLM_WORKERS:-1}
LITELLM_VENV=${BENCH_LITELLM_VENV:-$HOME/.cache/chatstream-litellm}
MAX_PEER_STREAMS=$(printf '%s\n' $PEER_STREAMS $PEER_ZERO_DELAY_STREAMS | sort -n | tail -1)
for part in ${ONLY//,/ }; do
    case $part in
    turns | suite | peer) ;;
    *)
        echo "BENCH_ONLY: unknown part '$part' (use turns, suite, peer, or several: turns,peer)" >&2
        exit 2
        ;;
    esac
done
# wants PART: whether this run includes PART.
wants() { [[ ",$ONLY," == *",$1,"* ]]; }
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
CHATSTREAM=$TARGET_DIR/release/chatstream
LOADTEST=$TARGET_DIR/release/chatstream-loadtest
ECHO=$TARGET_DIR/release/ws-echo-baseline
MOCK_PROVIDER=$TARGET_DIR/release/mock-provider

step() { printf '\n==> %s\n' "$*" >&2; }

step "building release binaries"
cargo build --release --locked -p chatstream -p chatstream-loadtest

# Every connection (idle or sending) is a file descriptor in both processes.
WANT_FILES=512
if wants suite; then WANT_FILES=$((IDLE + 512)); fi
if wants turns && [ $((MAX_TURN_CONVERSATIONS + 512)) -gt "$WANT_FILES" ]; then
    WANT_FILES=$((MAX_TURN_CONVERSATIONS + 512))
fi
# A gateway holds two sockets per stream (its client's and its provider's),
# and sockets linger while they close: at 1,024 streams an N + 512 limit made
# requests fail for want of descriptors, in the load generator and in the
# gateway.
PEER_FILES=$((4 * MAX_PEER_STREAMS + 512))
if wants peer && [ "$PEER_FILES" -gt "$WANT_FILES" ]; then
    WANT_FILES=$PEER_FILES
fi
step "raising the open-file limit to $WANT_FILES"
ulimit -Hn "$WANT_FILES" 2>/dev/null || true
ulimit -n "$WANT_FILES" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$WANT_FILES" ]; then
    if wants turns && [ "$(ulimit -n)" -lt $((MAX_TURN_CONVERSATIONS + 512)) ]; then
        echo "open-file limit is $(ulimit -n): too low for $MAX_TURN_CONVERSATIONS conversations" >&2
        exit 1
    fi
    if wants peer && [ "$(ulimit -n)" -lt "$PEER_FILES" ]; then
        echo "open-file limit is $(ulimit -n): too low for $MAX_PEER_STREAMS streams" >&2
        exit 1
    fi
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
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# wait_ready URL [TRIES]: polls an HTTP endpoint until it answers 200
# (TRIES times, 600 by default, 0.1 s apart).
wait_ready() {
    for _ in $(seq 1 "${2:-600}"); do
        if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$1" 2>/dev/null; then
            return
        fi
        sleep 0.1
    done
    echo "timed out waiting for $1 to be ready" >&2
    exit 1
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
# cpu_sample [PID...]: one JSON line: wall clock, the machine's busy and total
# CPU time (/proc/stat), the CPU time of each PID with its live descendants
# (/proc/*/stat; `proc` is the first PID's, `procs` all) and the load average.
cpu_sample() {
    python3 - "$@" <<'PY'
import json, os, sys, time
hz = os.sysconf("SC_CLK_TCK")
cpu = [int(v) for v in open("/proc/stat").readline().split()[1:]]
idle = cpu[3] + cpu[4]
children, own = {}, {}
for entry in os.listdir("/proc"):
    if not entry.isdigit():
        continue
    try:
        fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    children.setdefault(int(fields[1]), []).append(int(entry))
    own[int(entry)] = (int(fields[11]) + int(fields[12])) / hz
def tree(pid):
    return own[pid] + sum(tree(child) for child in children.get(pid, []))
procs = [tree(int(pid)) if int(pid) in own else None for pid in sys.argv[1:] if pid]
print(json.dumps({"t": time.time(), "busy": (sum(cpu) - idle) / hz, "total": sum(cpu) / hz,
                  "proc": procs[0] if procs else None, "procs": procs,
                  "loadavg": open("/proc/loadavg").read().split()[:3]}))
PY
}

mkdir -p docs/perf "$WORK/results"
: >"$WORK/commands.turns"
: >"$WORK/commands.suite"
: >"$WORK/commands.peer"
COMMANDS=$WORK/commands.suite
# run NAME ARGS...: one load test, its JSON in $WORK/results and its plot in
# docs/perf; its command line goes to $COMMANDS.
run() {
    local name=$1
    shift
    step "$name"
    local cmd=("$LOADTEST" --label "$name" --json-out "$WORK/results/$name.json"
        --plot-out "docs/perf/$name.svg" "$@")
    echo "chatstream-loadtest ${cmd[*]:1}" | sed "s|$WORK|\$WORK|g" >>"$COMMANDS"
    # The load generator's own CPU time (user, system seconds) goes to NAME.time.
    if [ -x /usr/bin/time ]; then
        /usr/bin/time -f "%U %S" -o "$WORK/results/$name.time" "${cmd[@]}"
    else
        "${cmd[@]}"
    fi
}

if wants turns; then
    COMMANDS=$WORK/commands.turns
    TURNS_LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
    # What the machine does without us (other processes on the same cores).
    cpu_sample >"$WORK/results/turns-idle.cpu"
    sleep 3
    cpu_sample >>"$WORK/results/turns-idle.cpu"
    for n in $TURN_CONVERSATIONS; do
        name=ws-turns-realistic-$n
        dir=$WORK/turns-$n
        step "starting chatstream dev for $n conversations (fresh data dir; mock: first token ${FIRST_TOKEN_DELAY_MS} ms, ${TOKEN_DELAY_MS} ms per token)"
        mkdir -p "$dir"
        (cd "$dir" && CHATSTREAM_MOCK_FIRST_TOKEN_DELAY_MS=$FIRST_TOKEN_DELAY_MS \
            CHATSTREAM_MOCK_TOKEN_DELAY_MS=$TOKEN_DELAY_MS \
            CHATSTREAM_MAX_IN_FLIGHT_PER_TENANT=$TURNS_TENANT_BOUND LOG_LEVEL=warn \
            exec "$CHATSTREAM" dev --data-dir data --http-port 0 --grpc-port 0 \
            >"$dir.out" 2>"$dir.err") &
        TPID=$!
        PIDS+=("$TPID")
        TWS_URL=$(wait_for_line "$dir.out" 'WebSocket' | awk '{print $2}')
        wait_ready "$(http_root "$TWS_URL")/ready"
        cpu_sample "$TPID" >"$WORK/results/$name.cpu"
        # N connections, each with its own conversation, one message in
        # flight, the next one sent when the reply has completed.
        run "$name" --ws-url "$TWS_URL" --api-key-file "$dir/data/dev-api-key" \
            --duration "$TURNS_DURATION" --quiet --connections "$n" --concurrency 1 \
            --wait-for completion
        cpu_sample "$TPID" >>"$WORK/results/$name.cpu"
        # The router's counters: answers and their tokens (the model's own
        # turn time), pauses, failures.
        python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' \
            "$(http_root "$TWS_URL")/metrics" >"$WORK/results/$name.metrics"
        stop "$TPID"
    done
    TURNS_LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
    COMMANDS=$WORK/commands.suite
fi

if wants suite; then
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

    # The Kafka runs get the machine to themselves.
    stop "$CHATSTREAM_PID"
    stop "$ECHO_PID"

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
fi

if wants peer; then
    COMMANDS=$WORK/commands.peer
    PEER_DIR=$WORK/peer
    mkdir -p "$PEER_DIR"
    LITELLM=$LITELLM_VENV/bin/litellm
    LITELLM_VERSION=""
    if [ ! -x "$LITELLM" ]; then
        step "installing the LiteLLM proxy into $LITELLM_VENV (kept for the next run)"
        if ! { python3 -m venv "$LITELLM_VENV" && "$LITELLM_VENV/bin/pip" install --quiet 'litellm[proxy]'; } >&2; then
            echo "warning: could not install litellm[proxy]; the peer part runs without LiteLLM" >&2
        fi
    fi
    if [ -x "$LITELLM" ]; then
        LITELLM_VERSION=$("$LITELLM" --version 2>/dev/null | grep -i version | tail -1 || true)
        LITELLM_VERSION="${LITELLM_VERSION:-unknown version}, $("$LITELLM_VENV/bin/python" --version 2>&1)"
    fi
    PEER_LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

    # start_mock_provider NAME FIRST_MS PER_MS: the mock on a free port; sets
    # MOCK_URL (its API root) and MOCK_PID.
    start_mock_provider() {
        local args=(--listen 127.0.0.1:0 --first-token-delay-ms "$2" --token-delay-ms "$3" --tokens "$PEER_TOKENS")
        echo "# $1: mock-provider ${args[*]}" >>"$COMMANDS"
        "$MOCK_PROVIDER" "${args[@]}" >"$PEER_DIR/$1.out" 2>"$PEER_DIR/$1.err" &
        MOCK_PID=$!
        PIDS+=("$MOCK_PID")
        MOCK_URL="http://$(wait_for_line "$PEER_DIR/$1.out" 'listening on' | awk '{print $3}')/v1"
    }
    # warm_up API-ROOT KEY: one streamed request, so no gateway's first
    # request (lazy imports, a first connection to the mock) is measured.
    warm_up() {
        python3 - "$1" "$2" <<'PY'
import json, sys, urllib.request
body = json.dumps({"model": "bench", "stream": True,
                   "messages": [{"role": "user", "content": "warm up"}]}).encode()
request = urllib.request.Request(sys.argv[1] + "/chat/completions", body, {
    "content-type": "application/json", "authorization": "Bearer " + sys.argv[2]})
for _ in range(3):
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()
PY
    }
    # start_litellm NAME MOCK-URL: a fresh LiteLLM proxy on a free port, its
    # one model `bench` the mock; sets GATEWAY_URL, GATEWAY_PID,
    # GATEWAY_KEY_FILE. LiteLLM refuses to start without a master key (the
    # key clients send), so it gets a random one, as chatstream's tenant has.
    start_litellm() {
        local dir=$PEER_DIR/$1 port
        port=$(free_port)
        mkdir -p "$dir"
        GATEWAY_KEY_FILE=$dir/master-key
        python3 -c 'import secrets; print("sk-" + secrets.token_hex(32))' >"$GATEWAY_KEY_FILE"
        cat >"$dir/config.yaml" <<YAML
model_list:
  - model_name: bench
    litellm_params:
      model: openai/bench
      api_base: $2
      api_key: sk-mock-provider
YAML
        echo "# $1: LITELLM_MASTER_KEY=\$(cat master-key) LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR litellm --config config.yaml --host 127.0.0.1 --port PORT --num_workers $PEER_LITELLM_WORKERS" >>"$COMMANDS"
        # The model cost map ships with the package; this skips fetching it.
        (cd "$dir" && LITELLM_MASTER_KEY=$(cat "$GATEWAY_KEY_FILE") LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR \
            exec "$LITELLM" --config config.yaml --host 127.0.0.1 --port "$port" \
            --num_workers "$PEER_LITELLM_WORKERS" >"$dir.out" 2>"$dir.err") &
        GATEWAY_PID=$!
        PIDS+=("$GATEWAY_PID")
        GATEWAY_URL=http://127.0.0.1:$port/v1
        wait_ready "http://127.0.0.1:$port/health/liveliness" 1800
    }
    # start_chatstream NAME MOCK-URL: a fresh `chatstream dev` (fresh data
    # dir) whose one model `bench` is the mock as an `openai`-kind provider;
    # sets GATEWAY_URL, GATEWAY_PID, GATEWAY_KEY_FILE.
    start_chatstream() {
        local dir=$PEER_DIR/$1 ws
        mkdir -p "$dir"
        cat >"$dir/chatstream.yaml" <<YAML
models:
  providers:
    mock-provider: {kind: openai, base_url: "$2"}
  catalog:
    bench: {provider: mock-provider}
  default_routing:
    candidates: [{model: bench}]
YAML
        echo "# $1: CHATSTREAM_MAX_IN_FLIGHT_PER_TENANT=$MAX_PEER_STREAMS chatstream dev --config chatstream.yaml --data-dir data --http-port 0 --grpc-port 0" >>"$COMMANDS"
        (cd "$dir" && CHATSTREAM_MAX_IN_FLIGHT_PER_TENANT=$MAX_PEER_STREAMS LOG_LEVEL=warn \
            exec "$CHATSTREAM" dev --config chatstream.yaml --data-dir data --http-port 0 --grpc-port 0 \
            >"$dir.out" 2>"$dir.err") &
        GATEWAY_PID=$!
        PIDS+=("$GATEWAY_PID")
        ws=$(wait_for_line "$dir.out" 'WebSocket' | awk '{print $2}')
        wait_ready "$(http_root "$ws")/ready"
        GATEWAY_URL=$(http_root "$ws")/v1
        GATEWAY_KEY_FILE=$dir/data/dev-api-key
    }
    # peer_run NAME URL KEY-FLAG KEY STREAMS PIDS...: the same load against
    # one target, its CPU (and the mock's) sampled around it. A run that
    # cannot start is reported as missing, not fatal: the other targets
    # still run.
    peer_run() {
        local name=$1 url=$2 key_flag=$3 key=$4 n=$5
        shift 5
        cpu_sample "$@" >"$WORK/results/$name.cpu"
        if ! run "$name" --transport openai --openai-url "$url" --openai-model bench "$key_flag" "$key" \
            --connections "$n" --concurrency 1 --wait-for completion --duration "$PEER_DURATION" --quiet; then
            echo "warning: $name did not finish" >&2
        fi
        cpu_sample "$@" >>"$WORK/results/$name.cpu"
    }
    # peer_variant VARIANT FIRST_MS PER_MS STREAMS...: for each N, the three
    # targets one after another, each gateway fresh and alone on the machine.
    peer_variant() {
        local variant=$1 first=$2 per=$3 n name
        shift 3
        start_mock_provider "mock-$variant" "$first" "$per"
        warm_up "$MOCK_URL" unused
        for n in "$@"; do
            step "peer ($variant, $n streams): the mock provider directly"
            peer_run "peer-$variant-direct-$n" "$MOCK_URL" --api-key unused "$n" "$MOCK_PID"
            if [ -x "$LITELLM" ]; then
                step "peer ($variant, $n streams): LiteLLM in front of the mock"
                name=peer-$variant-litellm-$n
                start_litellm "$name" "$MOCK_URL"
                warm_up "$GATEWAY_URL" "$(cat "$GATEWAY_KEY_FILE")"
                peer_run "$name" "$GATEWAY_URL" --api-key-file "$GATEWAY_KEY_FILE" "$n" "$GATEWAY_PID" "$MOCK_PID"
                cp "$PEER_DIR/$name.err" "$WORK/results/$name.log"
                stop "$GATEWAY_PID"
            fi
            step "peer ($variant, $n streams): chatstream in front of the mock"
            name=peer-$variant-chatstream-$n
            start_chatstream "$name" "$MOCK_URL"
            warm_up "$GATEWAY_URL" "$(cat "$GATEWAY_KEY_FILE")"
            peer_run "$name" "$GATEWAY_URL" --api-key-file "$GATEWAY_KEY_FILE" "$n" "$GATEWAY_PID" "$MOCK_PID"
            cp "$PEER_DIR/$name.err" "$WORK/results/$name.log"
            stop "$GATEWAY_PID"
        done
        stop "$MOCK_PID"
    }
    peer_variant realistic "$PEER_FIRST_TOKEN_DELAY_MS" "$PEER_TOKEN_DELAY_MS" $PEER_STREAMS
    if [ -n "$PEER_ZERO_DELAY_STREAMS" ]; then
        peer_variant zero 0 0 $PEER_ZERO_DELAY_STREAMS
    fi
    PEER_LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
    PEER_CONFIGS=$PEER_DIR
fi

step "writing docs/performance.md"
# The command line this run amounts to: the knobs that were set, then the script.
BENCH_COMMAND=""
for knob in BENCH_ONLY BENCH_DURATION BENCH_CONNECTIONS BENCH_IDLE_CONNECTIONS BENCH_KAFKA \
    BENCH_KAFKA_PARTITIONS BENCH_TURN_CONVERSATIONS BENCH_TURNS_DURATION BENCH_FIRST_TOKEN_DELAY_MS \
    BENCH_TOKEN_DELAY_MS BENCH_TURNS_MAX_IN_FLIGHT_PER_TENANT BENCH_PEER_STREAMS BENCH_PEER_DURATION \
    BENCH_PEER_FIRST_TOKEN_DELAY_MS BENCH_PEER_TOKEN_DELAY_MS BENCH_PEER_TOKENS \
    BENCH_PEER_ZERO_DELAY_STREAMS BENCH_PEER_LITELLM_WORKERS BENCH_LITELLM_VENV; do
    if [ -n "${!knob:-}" ]; then BENCH_COMMAND+="$knob=\"${!knob}\" "; fi
done
export BENCH_COMMAND="${BENCH_COMMAND}scripts/bench.sh"
export BENCH_WORK=$WORK BENCH_RAN=$ONLY BENCH_RUN_DURATION=$DURATION BENCH_RUN_CONNECTIONS=$CONNECTIONS \
    BENCH_RUN_IDLE=$IDLE BENCH_KAFKA_BROKER_DESC=${KAFKA_BROKER_DESC:-} BENCH_RUN_PARTITIONS=$KAFKA_PARTITIONS \
    BENCH_LOAD_BEFORE=${LOAD_BEFORE:-} BENCH_LOAD_AFTER=${LOAD_AFTER:-} \
    BENCH_TURNS_LOAD_BEFORE=${TURNS_LOAD_BEFORE:-} BENCH_TURNS_LOAD_AFTER=${TURNS_LOAD_AFTER:-} \
    BENCH_RUN_TURN_CONVERSATIONS=$TURN_CONVERSATIONS BENCH_RUN_TURNS_DURATION=$TURNS_DURATION \
    BENCH_RUN_FIRST_TOKEN_DELAY_MS=$FIRST_TOKEN_DELAY_MS BENCH_RUN_TOKEN_DELAY_MS=$TOKEN_DELAY_MS \
    BENCH_RUN_TENANT_BOUND=$TURNS_TENANT_BOUND \
    BENCH_RUN_PEER_STREAMS=$PEER_STREAMS BENCH_RUN_PEER_ZERO_DELAY_STREAMS=$PEER_ZERO_DELAY_STREAMS \
    BENCH_RUN_PEER_DURATION=$PEER_DURATION BENCH_RUN_PEER_FIRST_TOKEN_DELAY_MS=$PEER_FIRST_TOKEN_DELAY_MS \
    BENCH_RUN_PEER_TOKEN_DELAY_MS=$PEER_TOKEN_DELAY_MS BENCH_RUN_PEER_TOKENS=$PEER_TOKENS \
    BENCH_RUN_PEER_TENANT_BOUND=$MAX_PEER_STREAMS BENCH_RUN_LITELLM_WORKERS=$PEER_LITELLM_WORKERS \
    BENCH_LITELLM_VERSION=${LITELLM_VERSION:-} BENCH_PEER_LOAD_BEFORE=${PEER_LOAD_BEFORE:-} \
    BENCH_PEER_LOAD_AFTER=${PEER_LOAD_AFTER:-}
python3 - <<'PY'
import json, os, re, subprocess, sys, datetime

env = os.environ
work = env["BENCH_WORK"]
ran = set(env["BENCH_RAN"].split(","))
results = {name[:-5]: json.load(open(os.path.join(work, "results", name)))
           for name in os.listdir(os.path.join(work, "results")) if name.endswith(".json")}

def commands(part):
    return open(os.path.join(work, f"commands.{part}")).read().strip()

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

def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')

def lat(r, metric):
    return r["latency_ms"].get(metric) or {}

def num(v, digits=2):
    return "—" if v is None else f"{v:,.{digits}f}"

def ratio(a, b):
    return "—" if not a or not b else f"{a / b:.2f}×"

def verdict(ok, text):
    return ("met" if ok else "missed") + (f": {text}" if text else "")

def metric_sum(text, name, **labels):
    """Sum of a Prometheus counter's samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(r'^' + re.escape(name) + r'(\{[^}]*\})?\s+(\S+)$', line)
        if not m:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total

def cpu_delta(path):
    """(seconds, machine busy in cores, process in cores, load average at the end) between two samples."""
    a, b = [json.loads(l) for l in open(path).read().split("\n") if l.strip()][:2]
    dt = b["t"] - a["t"]
    proc = None if a["proc"] is None or b["proc"] is None else (b["proc"] - a["proc"]) / dt
    return dt, (b["busy"] - a["busy"]) / dt, proc, " ".join(b["loadavg"])

def turns_section():
    first, per = int(env["BENCH_RUN_FIRST_TOKEN_DELAY_MS"]), int(env["BENCH_RUN_TOKEN_DELAY_MS"])
    ns = [int(n) for n in env["BENCH_RUN_TURN_CONVERSATIONS"].split()]
    own_ttft = first + per
    s = []
    w = s.append
    w("## Full turns at realistic model latency (issue 13)\n")
    w(f"Run {now()}, commit `{git_commit()}` (plus uncommitted changes, if any), "
      f"`{env.get('BENCH_COMMAND', 'scripts/bench.sh')}`.\n")
    w(f"For each number N of conversations: a fresh `chatstream dev` (embedded log and store, fresh data "
      f"directory) with `CHATSTREAM_MOCK_FIRST_TOKEN_DELAY_MS={first} CHATSTREAM_MOCK_TOKEN_DELAY_MS={per} "
      f"CHATSTREAM_MAX_IN_FLIGHT_PER_TENANT={env['BENCH_RUN_TENANT_BOUND']}` (the other runner bounds at their "
      f"defaults), driven by `chatstream-loadtest` with N WebSocket connections of the one `dev` tenant, "
      f"each with its own conversation, one message in flight and the next sent when the reply has completed "
      f"(closed loop, `--concurrency 1 --wait-for completion`), {env['BENCH_RUN_TURNS_DURATION']} per run, "
      f"64-byte messages. The load generator runs on the same cores.\n")
    rows, tokens_seen = [], set()
    for n in ns:
        name = f"ws-turns-realistic-{n}"
        r = results.get(name)
        if not r:
            continue
        metrics = open(os.path.join(work, "results", f"{name}.metrics")).read()
        answers = metric_sum(metrics, "chatstream_router_attempts_total", outcome="ok")
        tokens = metric_sum(metrics, "chatstream_router_tokens_total", kind="completion")
        k = tokens / answers if answers else None
        if k is not None:
            tokens_seen.add(round(k, 2))
        turn_s = (first + k * per) / 1000 if k is not None else None
        limit = n / turn_s if turn_s else None
        t = r["throughput"]["replied_per_s"]
        tt, c = lat(r, "ttft"), lat(r, "completion")
        dt, busy, proc, load = cpu_delta(os.path.join(work, "results", f"{name}.cpu"))
        try:  # written by /usr/bin/time, when the machine has it
            user_sys = open(os.path.join(work, "results", f"{name}.time")).read().split()[-2:]
            loadgen = (float(user_sys[0]) + float(user_sys[1])) / dt
            other = busy - loadgen - (proc or 0)
        except (OSError, ValueError, IndexError):
            loadgen = other = None
        pauses = metric_sum(metrics, "chatstream_processor_partition_pauses_total")
        rows.append(dict(n=n, name=name, t=t, limit=limit, q=(t / limit if limit else None), tt=tt, c=c,
                         ack=lat(r, "ack"),
                         a50=(tt.get("p50") - own_ttft) if tt.get("p50") is not None else None,
                         a99=(tt.get("p99") - own_ttft) if tt.get("p99") is not None else None,
                         failed=r["failed"], replied=r["replied"], busy=busy, proc=proc, load=load,
                         loadgen=loadgen, other=other,
                         pauses=pauses, turn_ms=turn_s * 1000 if turn_s else None, k=k))
    ks = ", ".join(f"{k:g}" for k in sorted(tokens_seen)) or "?"
    turn_ms = rows[0]["turn_ms"] if rows else None
    w(f"**The model's own turn.** The mock answers `You said: <message>`, one token per word, and waits "
      f"{first} ms + {per} ms before the first token and {per} ms before each further one "
      f"(`processors/router/src/mock.rs`). Measured from each run's `/metrics` (completion tokens ÷ answers): "
      f"{ks} tokens per answer, so the model's own turn takes {first} + {ks} × {per} = {num(turn_ms, 0)} ms "
      f"and its own time to first token is {first} + {per} = {own_ttft} ms. Little's-law limit = N ÷ "
      f"{num(turn_ms, 0)} ms. **Added** time to first token = measured time to first token (client send → "
      f"first delta frame) − {own_ttft} ms; against the bare {first} ms it is {per} ms more.\n")
    idle = os.path.join(work, "results", "turns-idle.cpu")
    if os.path.exists(idle):
        _, background, _, load = cpu_delta(idle)
        w(f"Machine: load average {env.get('BENCH_TURNS_LOAD_BEFORE')} before → {env.get('BENCH_TURNS_LOAD_AFTER')} "
          f"after the turn runs (2 cores); {background:.2f} cores busy in the 3 s before the first run, "
          f"without chatstream (other processes on this machine).\n")
    w("CPU in cores (of 2), averaged over each run (connection set-up included): the whole machine from "
      "`/proc/stat`, chatstream from `/proc/<pid>/stat`, the load generator from its rusage; other processes = "
      "the rest. Ack = send → ack frame (the message is in the log); the added time to first token is mostly "
      "what the ack takes.\n")
    w("| conversations N | turns/s | Little's-law limit (turns/s) | ratio | TTFT p50 (ms) | TTFT p99 | "
      f"added p50 (TTFT − {own_ttft} ms) | added p99 | ack p50 | ack p99 | completion p50 | completion p99 | errors | "
      "CPU busy, whole machine (cores of 2) | chatstream | load generator | other processes | load avg after |")
    w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for x in rows:
        w(f"| {x['n']:,} | {num(x['t'], 0)} | {num(x['limit'], 0)} | {num(x['q'])} | {num(x['tt'].get('p50'), 1)} | "
          f"{num(x['tt'].get('p99'), 1)} | {num(x['a50'], 1)} | {num(x['a99'], 1)} | {num(x['ack'].get('p50'), 1)} | "
          f"{num(x['ack'].get('p99'), 1)} | {num(x['c'].get('p50'), 1)} | "
          f"{num(x['c'].get('p99'), 1)} | {x['failed']} | {num(x['busy'])} | {num(x['proc'])} | {num(x['loadgen'])} | "
          f"{num(x['other'])} | {x['load']} |")
    w("")
    w("Runner pauses at a bound (`chatstream_processor_partition_pauses_total`, all processors): " +
      ", ".join(f"{x['pauses']:.0f} at {x['n']:,}" for x in rows) + ".\n")
    w("### Against the targets of issue 13 (2 cores)\n")
    w("| target | measured | verdict |\n|---|---|---|")
    by_n = {x["n"]: x for x in rows}
    for n, goal in [(256, 0.9), (1024, 0.8)]:
        x = by_n.get(n)
        if x and x["q"] is not None:
            ok = x["q"] >= goal
            short = "" if ok else f"{goal / x['q']:.2f}× short"
            w(f"| ≥ {goal} of the Little's-law limit at {n:,} conversations | {x['q']:.2f} "
              f"({x['t']:,.0f} of {x['limit']:,.0f} turns/s) | {verdict(ok, short)} |")
        else:
            w(f"| ≥ {goal} of the Little's-law limit at {n:,} conversations | not run | — |")
    x = by_n.get(256)
    if x and x["a99"] is not None:
        ok = x["a99"] < 10
        over = "" if ok else f"{x['a99'] / 10:.1f}× over"
        w(f"| added time to first token p99 < 10 ms at 256 conversations | {x['a99']:,.1f} ms "
          f"(TTFT p99 {x['tt']['p99']:,.1f} ms − {own_ttft} ms) | {verdict(ok, over)} |")
    else:
        w("| added time to first token p99 < 10 ms at 256 conversations | not run | — |")
    w("")
    w("Plots (latency over time and by percentile): " +
      ", ".join(f"[{x['name']}](perf/{x['name']}.svg)" for x in rows) + ".\n")
    w("Commands (after starting each server on free ports; `$WORK` is the script's temporary directory):\n")
    w("```sh")
    w(commands("turns"))
    w("```\n")
    return s

def suite_section():
    load_before, load_after = env.get("BENCH_LOAD_BEFORE", ""), env.get("BENCH_LOAD_AFTER", "")
    duration, connections = env["BENCH_RUN_DURATION"], env["BENCH_RUN_CONNECTIONS"]
    broker, partitions = env.get("BENCH_KAFKA_BROKER_DESC", ""), env["BENCH_RUN_PARTITIONS"]
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

    s = []
    w = s.append
    w("## Zero-delay suite: gateway, full turns at zero model delay, Kafka, idle connections\n")
    w("| | |\n|---|---|")
    w(f"| date | {now()} |")
    w(f"| commit | `{git_commit()}` (plus uncommitted changes, if any) |")
    w(f"| load average (1/5/15 min) before → after | {load_before} → {load_after} |")
    w(f"| chatstream | `chatstream dev`: embedded log and store (redb, fsync per commit), in-process fan-out, mock model, `CHATSTREAM_MOCK_TOKEN_DELAY_MS=0` |")
    w(f"| baseline | `ws-echo-baseline`: tokio + axum WebSocket server that parses each JSON frame and answers with an ack-like frame, TCP_NODELAY on; no auth, no log, no fsync |")
    w(f"| load | {connections} connections, {duration} per run, 64-byte messages; the load generator runs on the same 2 cores |")
    if broker:
        w(f"| Kafka broker | {broker}; topics with {partitions} partitions, one fresh topic per gateway run |")
    w("")
    w("### Results\n")
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

    w("### Plots\n")
    w("Each plot shows latency over time (per-second p50 and p99 by scheduled send time) and the whole run's latency by percentile.\n")
    for name in sorted(n for n in results if not n.startswith(("ws-turns-realistic-", "peer-"))):
        w(f"- [{name}](perf/{name}.svg)")
    w("")
    w("![chatstream max ack throughput](perf/ws-ack-max-throughput.svg)\n")
    w("![chatstream time to first token](perf/ws-ttft-open-loop.svg)\n")
    if results.get("kafka-ws-ack-max-throughput"):
        w("![chatstream on Kafka, gateway ack](perf/kafka-ws-ack-max-throughput.svg)\n")
        w("![raw rdkafka producer, delivery report](perf/kafka-producer-max-throughput.svg)\n")

    w("### Exact commands\n")
    w("`scripts/bench.sh` ran these after starting the servers on free ports ($WORK is its temporary directory). "
      "The whole run: `" + env.get("BENCH_COMMAND", "scripts/bench.sh") + "`.\n")
    w("```sh")
    w(commands("suite"))
    w("```\n")
    return s

def peer_section():
    first, per = int(env["BENCH_RUN_PEER_FIRST_TOKEN_DELAY_MS"]), int(env["BENCH_RUN_PEER_TOKEN_DELAY_MS"])
    tokens = int(env["BENCH_RUN_PEER_TOKENS"])
    turn_ms = first + (tokens - 1) * per
    version = env.get("BENCH_LITELLM_VERSION") or "not installed (the install failed): not run"
    peer_dir = os.path.join(work, "peer")
    targets = [("direct", "mock provider directly"), ("litellm", "LiteLLM"), ("chatstream", "chatstream")]

    def peer_cpu(name):
        """(machine busy, [each sampled process tree]) in cores over the run."""
        try:
            a, b = [json.loads(l) for l in open(os.path.join(work, "results", f"{name}.cpu")) if l.strip()][:2]
        except (OSError, ValueError):
            return None, []
        dt = b["t"] - a["t"]
        procs = [None if x is None or y is None else (y - x) / dt
                 for x, y in zip(a.get("procs", []), b.get("procs", []))]
        return (b["busy"] - a["busy"]) / dt, procs

    def config_text(name, file):
        try:
            text = open(os.path.join(peer_dir, name, file)).read()
        except OSError:
            return None
        return re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", text).strip()

    s = []
    w = s.append
    w("## Against LiteLLM: the same streamed completions through each gateway (issue 14)\n")
    w(f"Run {now()}, commit `{git_commit()}` (plus uncommitted changes, if any), "
      f"`{env.get('BENCH_COMMAND', 'scripts/bench.sh')}`.\n")
    w("| | |\n|---|---|")
    w(f"| model | `mock-provider` ([`loadtest/src/bin/mock-provider.rs`](../loadtest/src/bin/mock-provider.rs)) "
      f"`--first-token-delay-ms {first} --token-delay-ms {per} --tokens {tokens}`: an OpenAI-compatible server whose "
      f"own time to first token is exactly {first} ms and whose whole answer takes {first} + {tokens - 1} × {per} = "
      f"{turn_ms} ms; the same process serves every target of a table |")
    w(f"| direct | `chatstream-loadtest` straight at the mock: the limit |")
    w(f"| LiteLLM | {version}; `litellm[proxy]` from PyPI in a venv, `litellm --config config.yaml "
      f"--num_workers {env['BENCH_RUN_LITELLM_WORKERS']}` (one uvicorn worker is its default), no database, "
      f"a random master key (it refuses to start without one), `LITELLM_LOG=ERROR`; a fresh process per run |")
    w(f"| chatstream | `chatstream dev` (release build of this commit): embedded log and store (fsync per commit), "
      f"the mock as its one `openai`-kind provider, `CHATSTREAM_MAX_IN_FLIGHT_PER_TENANT={env['BENCH_RUN_PEER_TENANT_BOUND']}`, "
      f"`LOG_LEVEL=warn`; every request is a turn in a new conversation whose user message and reply are made "
      f"durable; a fresh process and data directory per run |")
    w(f"| load | `chatstream-loadtest --transport openai --openai-model bench`: N connections, each with one streamed "
      f"`POST /v1/chat/completions` in flight, the next sent when `[DONE]` arrived (closed loop, `--concurrency 1 "
      f"--wait-for completion`), {env['BENCH_RUN_PEER_DURATION']} per run, 64-byte messages; a request without "
      f"`[DONE]` 10 s after it was sent fails (timeout). 3 warm-up requests before each run. The load generator, "
      f"the gateway and the mock share the same 2 cores; only one gateway runs at a time |")
    w(f"| load average before → after | {env.get('BENCH_PEER_LOAD_BEFORE', '')} → {env.get('BENCH_PEER_LOAD_AFTER', '')} |")
    w("")
    w("Time to first token (TTFT) = request sent → first content chunk; **added** = the gateway's percentile − "
      "the direct run's same percentile at the same N (a difference of percentiles, not a percentile of "
      "differences). Requests/s count completed streams (`[DONE]` received). CPU in cores (of 2), averaged over "
      "the run from `/proc` (connection set-up included): the gateway's process tree, the mock's, and the whole "
      "machine's.\n")
    verdict_rows = []
    for variant, title, ns in [
        ("realistic", f"mock at {first} ms to first token, {per} ms per token, {tokens} tokens",
         env["BENCH_RUN_PEER_STREAMS"].split()),
        ("zero", f"mock at zero delay, {tokens} tokens: each target's own ceiling",
         env.get("BENCH_RUN_PEER_ZERO_DELAY_STREAMS", "").split()),
    ]:
        if not ns:
            continue
        w(f"### {title[0].upper() + title[1:]}\n")
        limit_head = "Little's-law limit (N ÷ " + f"{turn_ms} ms)" if variant == "realistic" else "limit"
        w(f"| streams N | target | requests/s | {limit_head} | failed | TTFT p50 (ms) | TTFT p99 | TTFT p99.9 | "
          "added p50 | added p99 | added p99.9 | completion p50 | completion p99 | CPU gateway | CPU mock | CPU machine |")
        w("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        failures = []
        for n in map(int, ns):
            base = results.get(f"peer-{variant}-direct-{n}")
            base_tt = lat(base, "ttft") if base else {}
            row = {}
            for key, label in targets:
                name = f"peer-{variant}-{key}-{n}"
                r = results.get(name)
                if not r:
                    w(f"| {n:,} | {label} | not run | | | | | | | | | | | | | |")
                    continue
                tt, c = lat(r, "ttft"), lat(r, "completion")
                added = {p: (tt[p] - base_tt[p]) if key != "direct" and tt.get(p) is not None
                         and base_tt.get(p) is not None else None for p in ("p50", "p99", "p999")}
                t = r["throughput"]["replied_per_s"]
                limit = n / (turn_ms / 1000) if variant == "realistic" and turn_ms else None
                busy, procs = peer_cpu(name)
                gateway = procs[0] if key != "direct" and procs else None
                mock = procs[-1] if procs else None
                failed = r["failed"] + r.get("setup_failures", 0)
                if failed:
                    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(r.get("errors_by_kind", {}).items()))
                    if r.get("setup_failures"):
                        kinds += f"{', ' if kinds else ''}connections not set up {r['setup_failures']:,}"
                    failures.append(f"{label} at {n:,}: {kinds}")
                w(f"| {n:,} | {label} | {num(t, 0)} | {num(limit, 0)} | {failed:,} | {num(tt.get('p50'), 1)} | "
                  f"{num(tt.get('p99'), 1)} | {num(tt.get('p999'), 1)} | {num(added['p50'], 1)} | "
                  f"{num(added['p99'], 1)} | {num(added['p999'], 1)} | {num(c.get('p50'), 1)} | "
                  f"{num(c.get('p99'), 1)} | {num(gateway)} | {num(mock)} | {num(busy)} |")
                row[key] = dict(t=t, failed=failed, added=added)
            if "litellm" in row and "chatstream" in row:
                verdict_rows.append((variant, n, row["litellm"], row["chatstream"]))
        w("")
        if failures:
            w("Failures by kind: " + "; ".join(failures) + ".\n")
    w("### Against the targets of issue 14\n")
    if verdict_rows:
        w("| mock | streams N | chatstream adds less TTFT than LiteLLM (p50, p99) | more requests/s | "
          "fails none where LiteLLM fails none |")
        w("|---|---:|---|---|---|")
        for variant, n, lite, chat in verdict_rows:
            la, ca = lite["added"], chat["added"]
            if None in (la["p50"], la["p99"], ca["p50"], ca["p99"]):
                less = "—"
            else:
                ok = ca["p50"] < la["p50"] and ca["p99"] < la["p99"]
                less = verdict(ok, f"{ca['p50']:,.1f} vs {la['p50']:,.1f} ms, {ca['p99']:,.1f} vs {la['p99']:,.1f} ms")
            more = verdict(chat["t"] > lite["t"], f"{chat['t']:,.0f} vs {lite['t']:,.0f}")
            none = verdict(lite["failed"] > 0 or chat["failed"] == 0,
                           f"chatstream {chat['failed']:,}, LiteLLM {lite['failed']:,}")
            w(f"| {variant} | {n:,} | {less} | {more} | {none} |")
        w("")
    else:
        w("Not measured: LiteLLM or chatstream did not run.\n")
    order = {"realistic": 0, "zero": 1, "direct": 0, "litellm": 1, "chatstream": 2}
    plots = sorted((n for n in results if n.startswith("peer-")),
                   key=lambda n: (order.get(n.split("-")[1], 9), int(n.rsplit("-", 1)[1]), order.get(n.split("-")[2], 9)))
    if plots:
        w("Plots (latency over time and by percentile): " + ", ".join(f"[{n}](perf/{n}.svg)" for n in plots) + ".\n")
    for name, file, what in [
        (f"peer-realistic-litellm-{env['BENCH_RUN_PEER_STREAMS'].split()[0]}", "config.yaml", "LiteLLM's `config.yaml`"),
        (f"peer-realistic-chatstream-{env['BENCH_RUN_PEER_STREAMS'].split()[0]}", "chatstream.yaml", "chatstream's `chatstream.yaml`"),
    ]:
        text = config_text(name, file)
        if text:
            w(f"{what} (the port is the mock's):\n")
            w("```yaml\n" + text + "\n```\n")
    w("Commands (`#` lines start the servers, each on a free port in its own directory; `$WORK` is the "
      "script's temporary directory):\n")
    w("```sh")
    w(commands("peer"))
    w("```\n")
    return s

def previous_block(text, start, end):
    m = re.search(re.escape(start) + ".*?" + re.escape(end), text, re.S)
    return m.group(0) if m else None

try:
    previous = open("docs/performance.md").read()
except FileNotFoundError:
    previous = ""

out = []
w = out.append
w("# chatstream performance\n")
w("Measured by [`scripts/bench.sh`](../scripts/bench.sh) with `chatstream-loadtest` "
  "([`loadtest/`](../loadtest)). Rerun it to refresh every number and plot on this page; "
  "`BENCH_ONLY=turns scripts/bench.sh` reruns only the full turns at realistic model latency, "
  "`BENCH_ONLY=peer` only the comparison with LiteLLM, `BENCH_ONLY=suite` only the rest, and the page "
  "keeps the other parts from their previous run.\n")
w("## Machine\n")
w("| | |\n|---|---|")
w(f"| CPU | {cpu_model()}, `nproc` = {os.cpu_count()} |")
w(f"| memory | {mem_total()} |")
w(f"| kernel | {os.uname().release} |")
w("")
for part, build in [("turns", turns_section), ("suite", suite_section), ("peer", peer_section)]:
    start, end = f"<!-- {part}:start -->", f"<!-- {part}:end -->"
    if part in ran:
        block = start + "\n" + "\n".join(build()).rstrip() + "\n" + end
    else:
        block = previous_block(previous, start, end) or (
            f"{start}\n(Not run yet: `BENCH_ONLY={part} scripts/bench.sh`.)\n{end}")
    w(block + "\n")

# Keep the hand-written analysis of the previous report.
marker_start, marker_end = "<!-- analysis:start -->", "<!-- analysis:end -->"
w(previous_block(previous, marker_start, marker_end)
  or f"{marker_start}\n## Analysis\n\n(Not written yet for this run.)\n{marker_end}")
open("docs/performance.md", "w").write("\n".join(out) + "\n")
PY
echo "wrote docs/performance.md and docs/perf/*.svg" >&2
