#!/usr/bin/env bash
# Liveness, then readiness with reasons (broker, workers, providers).
set -euo pipefail
. "$(dirname "$0")/_common.sh"
curl -sS "$BASE_URL/health"; echo
curl -sS "${AUTH[@]}" "$BASE_URL/health/full"; echo
