#!/usr/bin/env bash
# Deploys a released chatstream image by hand, with the same steps as the
# CI pipeline (.github/workflows/ci-cd.yml):
#
#   scripts/deploy.sh staging 1.4.0              # helm upgrade, smoke test, roll back on failure
#   scripts/deploy.sh production 1.4.0           # blue-green: new color, smoke + SLO gates, switch, retire the old color
#   scripts/deploy.sh production 1.4.0 --dry-run # print every command instead of running it
#
# Options:
#   --dry-run        print the commands (cluster reads print a placeholder answer)
#   --keep-previous  production: leave the previous color running after the switch
#                    (retire it later by running the same command again)
#
# Environment:
#   CHATSTREAM_IMAGE_REPOSITORY  image repository (default ghcr.io/chatstream/chatstream)
#   CHATSTREAM_IMAGE_DIGEST      sha256:... of the image; deploys by digest, checks its signature
#   CHATSTREAM_SMOKE_API_KEY     a tenant's API key for the smoke test and the load test (required)
#   CHATSTREAM_SMOKE_MODEL       the model the smoke test asks (default: `mock` in staging,
#                                `synthetic` in production: the free mock-kind provider of
#                                values-production.yaml, which only the smoke tenant's routing allows)
#   CHATSTREAM_PUBLIC_URL        the public URL to smoke-test after the switch (optional)
#   CHATSTREAM_LOADTEST          the load tester binary (default chatstream-loadtest on PATH)
#   COSIGN_CERTIFICATE_IDENTITY_REGEXP, COSIGN_CERTIFICATE_OIDC_ISSUER
#                                keyless signature identity to verify (defaults: this repository's
#                                GitHub Actions workflow)
#   SLO_MAX_ERROR_RATE, SLO_MAX_ACK_P99_MS, SLO_MAX_TTFT_P99_MS, SLO_DURATION, SLO_CONNECTIONS
#                                the load tester's gates (defaults 0.001, 250, 3000, 60s, 20)
#   KUBE_CONTEXT                 kubectl/helm context (default: the current one)
#
# Needs helm (v4), kubectl, cosign (when a digest is given), curl, python3.
# docs/operations.md explains each step and how to roll back by hand.
set -Eeuo pipefail  # -E: the rollback trap also fires inside functions
cd "$(dirname "$0")/.."

usage() { sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; }

environment="${1:-}"
version="${2:-}"
[ $# -ge 2 ] && shift 2 || { usage >&2; exit 2; }
dry_run=0
keep_previous=0
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=1 ;;
        --keep-previous) keep_previous=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "deploy: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
case "$environment" in
    staging | production) ;;
    *) echo "deploy: the environment must be staging or production, not '$environment'" >&2; exit 2 ;;
esac
if ! [[ "$version" =~ ^v?[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$ ]]; then
    echo "deploy: the version must look like 1.4.0 (an image tag), not '$version'" >&2
    exit 2
fi

release=chatstream
namespace="chatstream-$environment"
chart=deploy/helm/chatstream
values="$chart/values-$environment.yaml"
repository="${CHATSTREAM_IMAGE_REPOSITORY:-ghcr.io/chatstream/chatstream}"
digest="${CHATSTREAM_IMAGE_DIGEST:-}"
loadtest="${CHATSTREAM_LOADTEST:-chatstream-loadtest}"
identity="${COSIGN_CERTIFICATE_IDENTITY_REGEXP:-^https://github.com/chatstream/chatstream/.github/workflows/ci-cd.yml@}"
issuer="${COSIGN_CERTIFICATE_OIDC_ISSUER:-https://token.actions.githubusercontent.com}"
context=()
[ -n "${KUBE_CONTEXT:-}" ] && context=(--kube-context "$KUBE_CONTEXT")
kube_context=()
[ -n "${KUBE_CONTEXT:-}" ] && kube_context=(--context "$KUBE_CONTEXT")

say() { printf '\n==> %s\n' "$*" >&2; }

# Runs a command, or prints it under --dry-run.
run() {
    if [ "$dry_run" = 1 ]; then
        printf '+'; printf ' %q' "$@"; printf '\n'
    else
        "$@"
    fi
}

# Reads from the cluster: runs the command, or prints it and answers
# $1 (a placeholder) under --dry-run.
read_cluster() {
    local placeholder="$1"
    shift
    if [ "$dry_run" = 1 ]; then
        printf '+'; printf ' %q' "$@"; printf "   # dry run: assumes '%s'\n" "$placeholder"
        ANSWER="$placeholder"
    else
        ANSWER="$("$@")"
    fi
}

if [ "$dry_run" = 0 ]; then
    for tool in helm kubectl curl python3; do
        command -v "$tool" >/dev/null || { echo "deploy: $tool is not installed" >&2; exit 1; }
    done
    [ -n "${CHATSTREAM_SMOKE_API_KEY:-}" ] || { echo "deploy: set CHATSTREAM_SMOKE_API_KEY to a tenant's API key for the smoke test" >&2; exit 1; }
fi
api_key="${CHATSTREAM_SMOKE_API_KEY:-<api key>}"
tag="${version#v}"
default_model=mock
[ "$environment" = production ] && default_model=synthetic
smoke_model="${CHATSTREAM_SMOKE_MODEL:-$default_model}"

# The image: by digest when given (after checking its signature), else by tag.
image_values=(--set "image.repository=$repository" --set "image.tag=$tag")
if [ -n "$digest" ]; then
    say "verifying the signature of $repository@$digest"
    [ "$dry_run" = 1 ] || command -v cosign >/dev/null || { echo "deploy: cosign is not installed" >&2; exit 1; }
    run cosign verify "$repository@$digest" \
        --certificate-identity-regexp "$identity" --certificate-oidc-issuer "$issuer" --output text
    image_values+=(--set "image.digest=$digest")
fi

say "checking the chart with $values"
run helm lint "$chart" -f "$values" "${image_values[@]}"

# Port-forwards a Service's HTTP port to a free local port; sets FORWARD_URL.
forward_pid=""
stop_forward() {
    if [ -n "$forward_pid" ]; then kill "$forward_pid" 2>/dev/null || true; wait "$forward_pid" 2>/dev/null || true; fi
    forward_pid=""
}
trap stop_forward EXIT
forward() {
    local service="$1" port
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    FORWARD_URL="http://127.0.0.1:$port"
    if [ "$dry_run" = 1 ]; then
        run kubectl "${kube_context[@]}" -n "$namespace" port-forward "svc/$service" "$port:8000"
        return
    fi
    kubectl "${kube_context[@]}" -n "$namespace" port-forward "svc/$service" "$port:8000" >/dev/null 2>&1 &
    forward_pid=$!
    for _ in $(seq 50); do
        curl -s -o /dev/null --max-time 1 "$FORWARD_URL/health" && return 0
        sleep 0.2
    done
    echo "deploy: cannot port-forward svc/$service" >&2
    return 1
}

smoke() {
    run deploy/smoke.sh --url "$1" --api-key "$api_key" --model "$smoke_model"
}

# The load tester's SLO gates (exit 3 when one is breached).
slo_gates() {
    local url="$1" ws
    ws="ws://${url#http://}/api/v2/chat/ws"
    run "$loadtest" --transport ws --ws-url "$ws" --api-key "$api_key" \
        --connections "${SLO_CONNECTIONS:-20}" --duration "${SLO_DURATION:-60s}" --ramp-up 10s \
        --max-error-rate "${SLO_MAX_ERROR_RATE:-0.001}" --gate-metric ack --max-p99-ms "${SLO_MAX_ACK_P99_MS:-250}" \
        --label "$environment-$tag-ack" --quiet
    run "$loadtest" --transport ws --ws-url "$ws" --api-key "$api_key" \
        --connections "${SLO_CONNECTIONS:-20}" --duration "${SLO_DURATION:-60s}" --ramp-up 10s \
        --max-error-rate "${SLO_MAX_ERROR_RATE:-0.001}" --gate-metric ttft --max-p99-ms "${SLO_MAX_TTFT_P99_MS:-3000}" \
        --label "$environment-$tag-ttft" --quiet
}

# Partitions, leaders and every processor group's lag, from inside the
# cluster (a projector pod has the config and reaches Kafka).
consumer_groups() {
    run kubectl "${kube_context[@]}" -n "$namespace" exec "deployment/$release-projector" -- chatstream topics describe
}

# The revision to return to when anything below fails (0: no release yet).
read_cluster 3 bash -c "helm ${context[*]} -n $namespace history $release --max 1 -o json 2>/dev/null |
    python3 -c 'import json, sys; print(json.load(sys.stdin)[-1][\"revision\"])' || echo 0"
previous_revision="$ANSWER"

rollback() {
    local status=$?
    stop_forward
    say "FAILED (exit $status): rolling back to revision $previous_revision"
    if [ "$previous_revision" = 0 ]; then
        echo "deploy: there was no release before: uninstall it by hand if you wish (helm -n $namespace uninstall $release)" >&2
    else
        run helm "${context[@]}" -n "$namespace" rollback "$release" "$previous_revision" --wait --timeout 10m
    fi
    exit "$status"
}

if [ "$environment" = staging ]; then
    trap rollback ERR
    say "deploying $tag to staging"
    run helm "${context[@]}" upgrade --install "$release" "$chart" -n "$namespace" --create-namespace \
        -f "$values" "${image_values[@]}" --wait --wait-for-jobs --timeout 15m --history-max 20
    say "smoke test"
    forward "$release-gateway"
    smoke "$FORWARD_URL"
    stop_forward
    consumer_groups
    trap - ERR
    say "staging runs $tag"
    exit 0
fi

# Production, blue-green: the idle color gets the new version beside the
# active one (processors roll in place), is smoke-tested and load-tested
# through its own Service, then the ingress switches to it. Any failure
# rolls the release back to the revision before.
read_cluster blue bash -c "helm ${context[*]} -n $namespace get values $release -a -o json 2>/dev/null |
    python3 -c 'import json, sys; print(json.load(sys.stdin)[\"blueGreen\"][\"activeColor\"])' || echo blue"
active="$ANSWER"
case "$active" in blue) idle=green ;; green) idle=blue ;; *) echo "deploy: unknown active color '$active'" >&2; exit 1 ;; esac
read_cluster 1.3.0 bash -c "helm ${context[*]} -n $namespace get values $release -a -o json 2>/dev/null |
    python3 -c 'import json, sys; v = json.load(sys.stdin); print(v[\"blueGreen\"][\"colors\"][\"$active\"][\"tag\"] or v[\"image\"][\"tag\"])' || echo"
active_tag="$ANSWER"
read_cluster "" bash -c "helm ${context[*]} -n $namespace get values $release -a -o json 2>/dev/null |
    python3 -c 'import json, sys; print(json.load(sys.stdin)[\"blueGreen\"][\"colors\"][\"$active\"].get(\"digest\") or \"\")' || echo"
active_digest="$ANSWER"
if [ -z "$active_tag" ]; then
    # First install: both colors start with the new version.
    active_tag="$tag"
    active_digest="$digest"
fi

colors() { # ACTIVE_COLOR ACTIVE_TAG IDLE_ENABLED
    printf '%s\n' --set "blueGreen.activeColor=$1" \
        --set "blueGreen.colors.$active.enabled=true" --set "blueGreen.colors.$active.tag=$active_tag" \
        --set "blueGreen.colors.$active.digest=$active_digest" \
        --set "blueGreen.colors.$idle.enabled=$3" --set "blueGreen.colors.$idle.tag=$tag" \
        --set "blueGreen.colors.$idle.digest=$digest"
}
upgrade() {
    local -a set_colors
    mapfile -t set_colors < <(colors "$@")
    run helm "${context[@]}" upgrade --install "$release" "$chart" -n "$namespace" --create-namespace \
        -f "$values" "${image_values[@]}" "${set_colors[@]}" --wait --wait-for-jobs --timeout 20m --history-max 20
}

trap rollback ERR
say "production: $active runs $active_tag; deploying $tag as $idle (migrations, processors, $idle gateways)"
upgrade "$active" "$active_tag" true
run kubectl "${kube_context[@]}" -n "$namespace" rollout status "deployment/$release-gateway-$idle" --timeout 10m

say "health checks, smoke test and SLO gates on $idle before it takes traffic"
consumer_groups
forward "$release-gateway-$idle"
smoke "$FORWARD_URL"
slo_gates "$FORWARD_URL"
stop_forward

say "switching traffic to $idle"
upgrade "$idle" "$active_tag" true
forward "$release-gateway"
smoke "$FORWARD_URL"
stop_forward
if [ -n "${CHATSTREAM_PUBLIC_URL:-}" ]; then
    smoke "$CHATSTREAM_PUBLIC_URL"
fi
trap - ERR

if [ "$keep_previous" = 1 ]; then
    say "production runs $tag on $idle; $active ($active_tag) is kept for a quick switch back"
    exit 0
fi
say "retiring $active ($active_tag)"
# The new color is now the active one: it keeps the new tag, the old color goes.
run helm "${context[@]}" upgrade --install "$release" "$chart" -n "$namespace" \
    -f "$values" "${image_values[@]}" --set "blueGreen.activeColor=$idle" \
    --set "blueGreen.colors.$idle.enabled=true" --set "blueGreen.colors.$idle.tag=$tag" \
    --set "blueGreen.colors.$idle.digest=$digest" \
    --set "blueGreen.colors.$active.enabled=false" --set "blueGreen.colors.$active.tag=" \
    --set "blueGreen.colors.$active.digest=" \
    --wait --timeout 10m --history-max 20
say "production runs $tag on $idle"
