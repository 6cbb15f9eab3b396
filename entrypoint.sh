#!/usr/bin/env bash
# Run one Rafale role: api | grpc | worker | all (the API, the gRPC server and the worker fleet
# in one container/host).
set -euo pipefail

role="${1:-all}"
PY="${PYTHON:-python}"

# Fail at start, naming the bad setting, rather than half-starting. For a role that runs the
# API this also refuses a gateway with no key unless RAFALE_OPEN=true says it was chosen.
"$PY" -m app.settings "$role"

api() {
  # Every uvicorn process writes its metrics here and /metrics sums them all. A directory of
  # our own is new (files of an earlier run would be summed in too) and removed when uvicorn
  # exits; one given is emptied first and left in place.
  local own_dir=""
  if [ -z "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
    PROMETHEUS_MULTIPROC_DIR="$(mktemp -d "${TMPDIR:-/tmp}/rafale-api-metrics-XXXXXX")"
    own_dir=1
  fi
  export PROMETHEUS_MULTIPROC_DIR
  mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
  find "$PROMETHEUS_MULTIPROC_DIR" -maxdepth 1 -name '*.db' -delete
  # uvicorn with UVICORN_WORKERS processes and the bounds of UVICORN_* and SHUTDOWN_GRACE, on a
  # socket a new instance can share while this one drains (see app/serve.py). Headers that
  # never finish are not bounded by uvicorn: that is the reverse proxy's job
  # (deploy/nginx/rafale.conf).
  "$PY" -m app.serve &
  local pid=$! code=0
  # Not exec'd, so the directory can be removed after: pass the stop signal on, and wait again
  # after a signal interrupted the wait, for uvicorn's own exit code.
  trap 'kill -TERM "$pid" 2>/dev/null' TERM INT
  wait "$pid" || code=$?
  while kill -0 "$pid" 2>/dev/null; do
    code=0
    wait "$pid" || code=$?
  done
  [ -z "$own_dir" ] || rm -rf "$PROMETHEUS_MULTIPROC_DIR"
  exit "$code"
}

grpc() {
  # The gRPC door (app/grpc/): the same fleet, keys and store as the API, on GRPC_PORT.
  exec "$PY" -m app.grpc
}

worker() {
  # The supervisor spawns LLM_WORKERS processes, restarts crashed ones and drains on SIGTERM.
  exec "$PY" -m workers
}

case "$role" in
  api) api ;;
  grpc) grpc ;;
  worker) worker ;;
  all)
    (api) &
    api_pid=$!
    (grpc) &
    grpc_pid=$!
    (worker) &
    worker_pid=$!
    stop() {
      kill -TERM "$api_pid" "$grpc_pid" "$worker_pid" 2>/dev/null || true
    }
    trap stop TERM INT
    # Whichever exits first (or a signal) stops the others; keep the first exit code.
    set +e
    wait -n "$api_pid" "$grpc_pid" "$worker_pid"
    code=$?
    stop
    wait "$api_pid" "$grpc_pid" "$worker_pid" 2>/dev/null
    exit "$code"
    ;;
  *)
    echo "usage: $0 [api|grpc|worker|all]" >&2
    exit 2
    ;;
esac
