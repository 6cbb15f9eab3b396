#!/usr/bin/env bash
# Stream an answer straight from the provider, without the queue: scripts/chat_direct.sh "Hi" [model]
set -euo pipefail
. "$(dirname "$0")/_common.sh"
msg="${1:-Hello, Rafale}"
model="${2:-}"
body="{\"message\": $(json_str "$msg")${model:+, \"model\": $(json_str "$model")}}"
# --fail-with-body: a refusal (unknown model, bad key) still prints the server's error, and
# the exit code says it failed.
curl -sS -N --fail-with-body -X POST "$BASE_URL/chat" "${AUTH[@]}" \
     -H 'content-type: application/json' -d "$body"
