#!/usr/bin/env bash
# Queue a chat request, then stream its answer: scripts/chat_async.sh "Hello" [model]
set -euo pipefail
. "$(dirname "$0")/_common.sh"
msg="${1:-Hello, Rafale}"
model="${2:-}"
body="{\"message\": $(json_str "$msg")${model:+, \"model\": $(json_str "$model")}}"
# --fail-with-body: a refusal (unknown model, bad key, broker down) prints the server's error
# and exits non-zero, instead of going on to read a stream that was never queued.
if ! resp="$(curl -sS --fail-with-body -X POST "$BASE_URL/chat/async" "${AUTH[@]}" \
               -H 'content-type: application/json' -d "$body")"; then
  echo "$resp" >&2
  exit 1
fi
echo "$resp"
url="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["stream_url"])' "$resp")"
curl -sS -N --fail-with-body "${AUTH[@]}" "$BASE_URL$url"
