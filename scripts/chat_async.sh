#!/usr/bin/env bash
# Queue a chat request, then stream its answer: scripts/chat_async.sh "Hello" [model]
set -euo pipefail
. "$(dirname "$0")/_common.sh"
msg="${1:-Hello, Rafale}"
model="${2:-}"
body="{\"message\": $(json_str "$msg")${model:+, \"model\": $(json_str "$model")}}"
resp="$(curl -sS -X POST "$BASE_URL/chat/async" "${AUTH[@]}" -H 'content-type: application/json' -d "$body")"
echo "$resp"
url="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["stream_url"])' "$resp")"
curl -sS -N "${AUTH[@]}" "$BASE_URL$url"
