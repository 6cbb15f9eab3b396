#!/usr/bin/env bash
# Run one Rafale role: api | worker | all (API plus the worker fleet in one container/host).
set -euo pipefail

role="${1:-all}"
PY="${PYTHON:-python}"

# Fail at start, naming the bad setting, rather than half-starting. For a role that runs the
# API this also refuses a gateway with no key unless RAFALE_OPEN=true says it was chosen.
"$PY" -m app.settings "$role"

api() {
  # Every uvicorn process writes its metrics here and /metrics sums them all. Files left by an
  # earlier run would be summed in too, so the directory starts empty.
  export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-${TMPDIR:-/tmp}/rafale-api-metrics-$$}"
  mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
  find "$PROMETHEUS_MULTIPROC_DIR" -maxdepth 1 -name '*.db' -delete
  # Bounds per process: an idle keep-alive connection is closed after a few seconds; past
  # LIMIT_CONCURRENCY open connections or tasks uvicorn answers 503 instead of taking more.
  # Headers that never finish are not bounded by uvicorn: that is the reverse proxy's job
  # (deploy/nginx/rafale.conf).
  exec "$PY" -m uvicorn app.main:app \
    --host "${HOST:-0.0.0.0}" --port "${PORT:-8007}" \
    --workers "${UVICORN_WORKERS:-2}" --loop uvloop --http httptools \
    --timeout-keep-alive "${UVICORN_TIMEOUT_KEEP_ALIVE:-5}" \
    --limit-concurrency "${UVICORN_LIMIT_CONCURRENCY:-2048}" \
    --backlog "${UVICORN_BACKLOG:-2048}" \
    --no-access-log --timeout-graceful-shutdown "${SHUTDOWN_GRACE:-20}"
}

worker() {
  # The supervisor spawns LLM_WORKERS processes, restarts crashed ones and drains on SIGTERM.
  exec "$PY" -m workers
}

case "$role" in
  api) api ;;
  worker) worker ;;
  all)
    (api) &
    api_pid=$!
    (worker) &
    worker_pid=$!
    stop() {
      kill -TERM "$api_pid" "$worker_pid" 2>/dev/null || true
    }
    trap stop TERM INT
    # Whichever exits first (or a signal) stops the other; keep the first exit code.
    set +e
    wait -n "$api_pid" "$worker_pid"
    code=$?
    stop
    wait "$api_pid" "$worker_pid" 2>/dev/null
    exit "$code"
    ;;
  *)
    echo "usage: $0 [api|worker|all]" >&2
    exit 2
    ;;
esac
