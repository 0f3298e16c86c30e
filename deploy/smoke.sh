#!/usr/bin/env bash
# Sends one message through a running chatstream and checks the answer came
# back: gateway → log → router (→ model) → log → projector → fan-out →
# gateway, over the OpenAI-compatible HTTP edge. Then checks the analytics
# processor counted it. Needs curl and python3.
#
#   deploy/smoke.sh                                  # the compose cluster (deploy/compose.yaml)
#   deploy/smoke.sh --url https://chat.staging.example.com --api-key "$KEY" --model gpt-4o-mini
#
# Options (and their environment variables):
#   --url URL         gateway HTTP root (CHATSTREAM_SMOKE_URL; default http://127.0.0.1:8000)
#   --api-key KEY     a tenant's API key (CHATSTREAM_SMOKE_API_KEY; default the
#                     compose cluster's key in deploy/compose/api-key)
#   --model NAME      the model to ask (CHATSTREAM_SMOKE_MODEL; default mock). With
#                     `mock` the answer must be "You said: <message>".
#   --wait SECONDS    how long the gateway may take to become ready (default 120)
#   --no-analytics    skip the analytics check (a deployment without that processor)
# Exit status 0 when every check passed; the first failure says what failed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

url="${CHATSTREAM_SMOKE_URL:-http://127.0.0.1:8000}"
api_key="${CHATSTREAM_SMOKE_API_KEY:-}"
model="${CHATSTREAM_SMOKE_MODEL:-mock}"
wait_seconds=120
analytics=1
while [ $# -gt 0 ]; do
    case "$1" in
        --url) url="$2"; shift 2 ;;
        --api-key) api_key="$2"; shift 2 ;;
        --model) model="$2"; shift 2 ;;
        --wait) wait_seconds="$2"; shift 2 ;;
        --no-analytics) analytics=0; shift ;;
        -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "smoke: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
url="${url%/}"
if [ -z "$api_key" ]; then
    api_key="$(tr -d '[:space:]' <"$here/compose/api-key")"
fi

fail() { echo "smoke: FAIL: $*" >&2; exit 1; }
say() { echo "smoke: $*"; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# 1. Ready: the gateway's backends answer and the projector caught up.
deadline=$((SECONDS + wait_seconds))
until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url/ready")" = 200 ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "$url/ready is not 200 after ${wait_seconds}s"
    sleep 2
done
say "$url is ready"

# 2. Health and metrics answer.
[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url/health")" = 200 ] || fail "$url/health is not 200"
curl -sf --max-time 5 "$url/metrics" >"$work/metrics-before" || fail "$url/metrics does not answer"

# 3. One turn through the OpenAI edge, not streamed.
text="smoke $(date -u +%Y%m%dT%H%M%SZ)-$RANDOM"
status="$(curl -s --max-time 60 -o "$work/reply.json" -D "$work/headers" -w '%{http_code}' \
    "$url/v1/chat/completions" \
    -H "Authorization: Bearer $api_key" -H 'content-type: application/json' \
    -d "{\"model\":\"$model\",\"messages\":[{\"role\":\"user\",\"content\":\"$text\"}]}")"
[ "$status" = 200 ] || fail "POST /v1/chat/completions answered $status: $(head -c 500 "$work/reply.json")"
conversation="$(sed -n 's/^x-chatstream-conversation-id: *\([^[:space:]]*\).*/\1/Ip' "$work/headers")"
[ -n "$conversation" ] || fail "no x-chatstream-conversation-id header in the reply"
python3 - "$work/reply.json" "$model" "$text" <<'PY' || fail "the reply is not the answer expected (above)"
import json, sys
path, model, text = sys.argv[1:]
reply = json.load(open(path))
choice = reply["choices"][0]
content = choice["message"]["content"] or ""
if not content.strip():
    sys.exit(f"empty answer: {reply}")
if model == "mock" and content != f"You said: {text}":
    sys.exit(f"the mock model answered {content!r}, not 'You said: {text}'")
if choice.get("finish_reason") != "stop":
    sys.exit(f"finish_reason {choice.get('finish_reason')!r}, not 'stop'")
PY
say "answered in conversation $conversation"

# 4. The gateway counted it.
# (Into a file first: `curl | grep -q` fails under pipefail when grep stops early.)
curl -sf --max-time 5 "$url/metrics" -o "$work/metrics-after" || fail "$url/metrics does not answer"
grep -q '^chatstream_gateway_openai_completions_total' "$work/metrics-after" ||
    fail "chatstream_gateway_openai_completions_total is not on $url/metrics"

# 5. The analytics processor projected it (it runs behind the others).
if [ "$analytics" = 1 ]; then
    deadline=$((SECONDS + 60))
    until curl -sf --max-time 5 -H "Authorization: Bearer $api_key" \
        "$url/api/v2/analytics/usage?bucket=day" -o "$work/usage.json" &&
        python3 -c '
import json, sys
totals = json.load(open(sys.argv[1])).get("totals", [])
sys.exit(0 if any(v for t in totals for v in t.get("counters", {}).values() if isinstance(v, (int, float)) and v > 0) else 1)
' "$work/usage.json"; do
        [ "$SECONDS" -lt "$deadline" ] || fail "the analytics API shows no usage after 60s: $(head -c 300 "$work/usage.json" 2>/dev/null)"
        sleep 2
    done
    say "the analytics processor counted it"
fi
say "PASS"
