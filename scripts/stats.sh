#!/usr/bin/env bash
# Queue depths, dead letters, workers, and one real round trip through the queue.
set -euo pipefail
. "$(dirname "$0")/_common.sh"
curl -sS "${AUTH[@]}" "$BASE_URL/stats"; echo
curl -sS "${AUTH[@]}" "$BASE_URL/test"; echo
