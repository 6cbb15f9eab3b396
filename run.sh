#!/usr/bin/env bash
# Rafale without Docker: ./run.sh start|stop|restart|status|logs|cli|test
# and, where a Docker engine exists: ./run.sh docker-start|docker-stop|docker-logs
set -euo pipefail

CALLER_PWD="$PWD"
cd "$(dirname "$0")"
ROOT="$PWD"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
RUN_DIR="$ROOT/.run"
LOG_DIR="$ROOT/logs"
PID_FILE="$RUN_DIR/rafale.pid"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# .env, read as the processes read it (python-dotenv, which pydantic-settings uses), never run
# as shell: `DEEPL_LANGUAGES=DE, FR` means the same here and there. A variable already in the
# environment wins, as it does in pydantic-settings. Needs the venv; without one nothing runs.
load_env() {
  [ -f "$ROOT/.env" ] && [ -x "$PY" ] || return 0
  local exports
  exports="$("$PY" - "$ROOT/.env" <<'PYEOF'
import os, re, shlex, sys
from dotenv import dotenv_values
present = {k.lower() for k in os.environ}  # pydantic-settings ignores case
for key, value in dotenv_values(sys.argv[1], encoding="utf-8").items():
    if value is None or key.lower() in present:
        continue
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        print(f"echo {shlex.quote(f'.env: ignoring {key!r}: not a variable name')} >&2")
        continue
    print(f"export {key}={shlex.quote(value)}")
PYEOF
)" || { echo "could not read $ROOT/.env" >&2; exit 1; }
  eval "$exports"
}

# What this script needs of the settings, defaulted as Settings defaults them; not exported,
# so a .env read later (a fresh clone has no venv yet) still reaches the processes.
settings_defaults() {
  PORT="${PORT:-8007}"
  BROKER_URL="${RABBITMQ_URL:-${RABBIT_MQ:-amqp://guest:guest@127.0.0.1:5672/}}"
}
load_env
settings_defaults

# Create the venv and install; reinstall only when pyproject.toml changed since the last time.
ensure_venv() {
  local extras="$1" stamp="$VENV/.installed-$1"
  # A current dev install (./run.sh test) includes the plain one.
  if [ -z "$extras" ] && [ -x "$PY" ] && [ -f "$VENV/.installed-dev" ] \
      && [ ! pyproject.toml -nt "$VENV/.installed-dev" ]; then
    return 0
  fi
  if [ ! -x "$PY" ]; then
    local sys_py="" candidate
    # Try each name for real: a pyenv shim exists even when its version is not selected.
    for candidate in python3.12 python3.11 python3; do
      if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        sys_py="$candidate"
        break
      fi
    done
    [ -n "$sys_py" ] || { echo "Rafale needs Python 3.11 or newer (python3.11 or python3)" >&2; exit 1; }
    say "creating $VENV"
    "$sys_py" -m venv "$VENV"
  fi
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    say "installing Rafale${extras:+ with [$extras]}"
    "$PY" -m pip install -q --upgrade pip
    if [ -n "$extras" ]; then
      "$PY" -m pip install -q -e ".[$extras]"
    else
      "$PY" -m pip install -q -e .
    fi
    touch "$stamp"
  fi
}

# Whether a service URL's host:port takes a TCP connection (args: URL, default port).
url_reachable() {
  "$PY" - "$1" "$2" <<'PYEOF'
import socket, sys
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1])
try:
    socket.create_connection((u.hostname or "127.0.0.1", u.port or int(sys.argv[2])), timeout=2).close()
except OSError:
    sys.exit(1)
PYEOF
}

url_is_local() {
  "$PY" - "$1" <<'PYEOF'
import sys
from urllib.parse import urlsplit
sys.exit(0 if (urlsplit(sys.argv[1]).hostname or "127.0.0.1") in ("127.0.0.1", "localhost", "::1") else 1)
PYEOF
}

broker_reachable() { url_reachable "$BROKER_URL" 5672; }
broker_is_local() { url_is_local "$BROKER_URL"; }

# Redis holds the per-key counters when REDIS_URL is set (optional for `start`; the tests of
# the Redis counters use one on 127.0.0.1:6379). Use it if it answers; else start a local
# redis-server (installed with apt-get when we can), with no persistence: counts only.
ensure_redis() {
  local url="$1" port
  url_reachable "$url" 6379 && return 0
  port="$("$PY" -c 'import sys; from urllib.parse import urlsplit; print(urlsplit(sys.argv[1]).port or 6379)' "$url")"
  if url_is_local "$url"; then
    if ! command -v redis-server >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      say "installing redis-server"
      (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null) || true
    fi
    if command -v redis-server >/dev/null 2>&1; then
      say "starting a local Redis on port $port (redis-server --daemonize yes)"
      redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --save "" --appendonly no >/dev/null || true
      for _ in $(seq 1 20); do
        url_reachable "$url" 6379 && return 0
        sleep 0.5
      done
    fi
  fi
  cat >&2 <<MSG
Redis is not reachable at $url (REDIS_URL). Either:
  - install and start it:   sudo apt-get install -y redis-server
  - or run it in Docker:    docker run -d --name redis -p 127.0.0.1:6379:6379 redis:7-alpine
  - or leave REDIS_URL unset: the per-key counters then live in the store
MSG
  exit 1
}

# Use RABBITMQ_URL if it answers; else start a local rabbitmq-server if one is installed;
# else say exactly what to do.
ensure_broker() {
  broker_reachable && return 0
  if broker_is_local && command -v rabbitmq-server >/dev/null 2>&1; then
    say "starting the local RabbitMQ (rabbitmq-server -detached)"
    rabbitmq-server -detached >/dev/null 2>&1 || true
    for _ in $(seq 1 60); do
      broker_reachable && return 0
      sleep 1
    done
    # A node that is up with its app stopped (rabbitmqctl stop_app) only needs the app.
    rabbitmqctl start_app >/dev/null 2>&1 || true
    for _ in $(seq 1 30); do
      broker_reachable && return 0
      sleep 1
    done
  fi
  cat >&2 <<MSG
RabbitMQ is not reachable at $BROKER_URL. Either:
  - install and start it:   sudo apt-get install -y rabbitmq-server && sudo rabbitmq-server -detached
  - or run it in Docker:    docker run -d --name rabbitmq -p 5672:5672 rabbitmq:3.13-management
  - or point Rafale at one: export RABBITMQ_URL=amqp://user:pass@host:5672/
MSG
  exit 1
}

running_pid() {
  [ -f "$PID_FILE" ] || return 1
  local pid
  pid="$(cat "$PID_FILE")"
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# No key configured and no explicit RAFALE_OPEN: run open, but for this machine only.
local_open_default() {
  if [ -z "${RAFALE_API_KEYS:-}" ] && [ -z "${RAFALE_API_KEYS_FILE:-}" ] && [ -z "${RAFALE_OPEN:-}" ]; then
    export RAFALE_OPEN=true HOST=127.0.0.1 GRPC_HOST=127.0.0.1
    say "no API key configured: serving this machine only (127.0.0.1), open (RAFALE_OPEN=true)"
    cat <<MSG
    To share it, give keys of 20+ characters in .env, then ./run.sh restart:
      RAFALE_API_KEYS=alice:$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    and HOST=0.0.0.0 GRPC_HOST=0.0.0.0 to listen beyond this machine (see "Running it in
    front of people").
MSG
  fi
}

# What start and restart need before they launch processes.
prepare_start() {
  ensure_venv ""
  load_env
  settings_defaults
  ensure_broker
  [ -z "${REDIS_URL:-}" ] || ensure_redis "$REDIS_URL"
  local_open_default
  mkdir -p "$RUN_DIR" "$LOG_DIR"
}

# Byte offset where the next log lines begin: a failed start shows those, not the last run's.
log_offset() {
  echo $(( $(if [ -f "$LOG_DIR/rafale.log" ]; then wc -c <"$LOG_DIR/rafale.log"; else echo 0; fi) + 1 ))
}

# entrypoint.sh all (API + gRPC + worker fleet) in the background, in a session of its own; sets LAUNCHED.
launch() {
  PATH="$VENV/bin:$PATH" PYTHON="$PY" setsid nohup ./entrypoint.sh all >>"$LOG_DIR/rafale.log" 2>&1 &
  LAUNCHED=$!
}

up_message() {
  cat <<MSG

Rafale is up.
  chat page:   http://127.0.0.1:$PORT/
  API docs:    http://127.0.0.1:$PORT/docs
  health:      http://127.0.0.1:$PORT/health/full
  gRPC:        127.0.0.1:${GRPC_PORT:-50051} (rafale.v1.Rafale; reflection on: grpcurl -plaintext 127.0.0.1:${GRPC_PORT:-50051} list)
  try it:      scripts/chat_async.sh "Hello, Rafale"
               ./run.sh cli chat "Hello, Rafale"   (the rafale command: .venv/bin/rafale)
  stop it:     ./run.sh stop
MSG
}

cmd_start() {
  if pid="$(running_pid)"; then
    echo "Rafale is already running (pid $pid); ./run.sh restart to restart it"
    return 0
  fi
  prepare_start
  local from
  from="$(log_offset)"
  say "starting Rafale on ${HOST:-0.0.0.0}:$PORT, gRPC on ${GRPC_HOST:-0.0.0.0}:${GRPC_PORT:-50051} (log: logs/rafale.log)"
  launch
  echo "$LAUNCHED" >"$PID_FILE"
  if ! wait_until_up; then
    tail -c "+$from" "$LOG_DIR/rafale.log" | tail -n 30 >&2
    stop_quietly
    exit 1
  fi
  wait_for_workers
  up_message
}

# The new processes start beside the running ones, on the same port (app/serve.py), and only
# once they serve are the old ones stopped (they finish what they answer, SHUTDOWN_GRACE at
# most): the port never refuses a connection. A new start that fails leaves the old one
# serving. An old instance that cannot share its port (started by an earlier Rafale) is
# stopped first, as before.
cmd_restart() {
  local old from
  if ! old="$(running_pid)"; then
    cmd_start
    return
  fi
  prepare_start
  from="$(log_offset)"
  say "starting new processes beside the running ones (pid $old) on ${HOST:-0.0.0.0}:$PORT"
  launch
  if ! wait_new_api "$LAUNCHED" "$from"; then
    tail -c "+$from" "$LOG_DIR/rafale.log" | tail -n 30 >&2
    stop_pid "$LAUNCHED" quietly
    if tail -c "+$from" "$LOG_DIR/rafale.log" | grep -q "cannot listen on .*Address already in use\|Failed to bind"; then
      say "the running instance does not share its port: stopping it first"
      cmd_stop
      cmd_start
      return
    fi
    echo "restart failed: the running instance (pid $old) still serves" >&2
    exit 1
  fi
  echo "$LAUNCHED" >"$PID_FILE"
  say "stopping the old processes (pid $old); they finish what they are answering"
  stop_pid "$old"
  wait_for_workers
  up_message
}

# Until every API process and the gRPC door of the instance `pid` logged their start (its log
# lines begin at byte `from`): /health cannot tell, the old processes answer on the same ports.
wait_new_api() {
  local pid="$1" from="$2" want="${UVICORN_WORKERS:-2}" n grpc
  for _ in $(seq 1 60); do
    n="$(tail -c "+$from" "$LOG_DIR/rafale.log" | grep -c "Application startup complete" || true)"
    grpc="$(tail -c "+$from" "$LOG_DIR/rafale.log" | grep -c "gRPC serving rafale.v1.Rafale" || true)"
    [ "$n" -ge "$want" ] && [ "$grpc" -ge 1 ] && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "the new processes exited during start; the log (logs/rafale.log) says:" >&2
      return 1
    fi
    sleep 0.5
  done
  echo "the new processes did not start within 30 s; the log (logs/rafale.log) says:" >&2
  return 1
}

http_ok() {
  "$PY" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$PORT$1', timeout=1)" 2>/dev/null
}

# Until /health answers (30 s at most); false, with the reason on stderr, when it does not.
wait_until_up() {
  for _ in $(seq 1 60); do
    http_ok /health && return 0
    if ! running_pid >/dev/null; then
      echo "Rafale exited during start; its log (logs/rafale.log) says:" >&2
      return 1
    fi
    sleep 0.5
  done
  echo "Rafale did not answer on port $PORT within 30 s; its log (logs/rafale.log) says:" >&2
  return 1
}

# /health/full says `starting` until an API process has heard the workers' first heartbeat;
# wait for that (a few seconds at most), so "up" means the whole fleet is known.
wait_for_workers() {
  local status=""
  for _ in $(seq 1 30); do
    status="$("$PY" - "$PORT" <<'PYEOF' 2>/dev/null || true
import json, sys, urllib.error, urllib.request
try:
    r = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health/full", timeout=5)
except urllib.error.HTTPError as e:
    r = e
print(json.load(r).get("status", ""))
PYEOF
)"
    [ "$status" = starting ] || [ -z "$status" ] || break
    sleep 0.5
  done
  [ "$status" = ok ] || echo "warning: /health/full says '${status:-no answer}': ./run.sh status tells why" >&2
}

# After a failed start: nothing of it keeps running, and no pid file is left behind.
stop_quietly() {
  local pid
  if pid="$(running_pid)"; then
    stop_pid "$pid" quietly
  fi
  rm -f "$PID_FILE"
}

# SIGTERM to an instance (entrypoint.sh passes it on to the API and the worker supervisor),
# then SIGKILL to its whole session if it is still there after SHUTDOWN_GRACE + 5 s. `quietly`
# (a start that failed: nothing to finish): 10 s, and whatever it left in its session goes too.
stop_pid() {
  local pid="$1" mode="${2:-}" grace="${SHUTDOWN_GRACE:-20}" rounds
  rounds=$(( (${grace%.*} + 5) * 2 ))
  [ "$mode" = quietly ] && rounds=20
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 "$rounds"); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    [ "$mode" = quietly ] || echo "still running after the grace period; killing it"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  elif [ "$mode" = quietly ]; then
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
}

cmd_stop() {
  local pid
  if ! pid="$(running_pid)"; then
    echo "Rafale is not running"
    rm -f "$PID_FILE"
    return 0
  fi
  say "stopping Rafale (pid $pid)"
  stop_pid "$pid"
  rm -f "$PID_FILE"
  echo "stopped"
}

cmd_status() {
  if pid="$(running_pid)"; then
    echo "Rafale is running (pid $pid) on port $PORT"
    curl -s "http://127.0.0.1:$PORT/health/full" && echo
  else
    echo "Rafale is not running"
    return 3
  fi
}

cmd_logs() {
  [ -f "$LOG_DIR/rafale.log" ] || { echo "no logs yet"; return 0; }
  if [ -t 1 ]; then tail -n 100 -f "$LOG_DIR/rafale.log"; else tail -n 200 "$LOG_DIR/rafale.log"; fi
}

# The `rafale` command (.venv/bin/rafale) against this checkout's server, run where you are, so
# the paths you give it are yours: ./run.sh cli chat "Hello", ./run.sh cli batch list.
cmd_cli() {
  [ -x "$PY" ] || { ensure_venv "" >&2; load_env; settings_defaults; }
  export RAFALE_BASE_URL="${RAFALE_BASE_URL:-http://127.0.0.1:$PORT}"
  cd "$CALLER_PWD"
  PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" -m app.cli "$@"
}

cmd_test() {
  ensure_venv dev
  load_env
  settings_defaults
  # Browser tests (the chat page) drive Debian's chromium; install it when we can.
  if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing chromium for the browser tests"
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; browser tests will be skipped" >&2
  fi
  ensure_broker
  export RAFALE_TEST_REDIS="${RAFALE_TEST_REDIS:-redis://127.0.0.1:6379/0}"
  ensure_redis "$RAFALE_TEST_REDIS"
  export RAFALE_NAMESPACE="${RAFALE_NAMESPACE:-test-$(date +%s)-$$}"
  export PYTHONUNBUFFERED=1
  say "ruff"
  "$VENV/bin/ruff" check app workers tests bench
  say "mypy"
  "$VENV/bin/mypy"
  if [ $# -gt 0 ]; then
    say "pytest $* (namespace $RAFALE_NAMESPACE)"
    "$PY" -m pytest "$@"
    return
  fi
  # The unit tier first: seconds, and a broken invariant stops the run before any process starts.
  say "pytest: unit tier (tests/unit)"
  "$PY" -m pytest -q tests/unit
  say "pytest: the rest (namespace $RAFALE_NAMESPACE)"
  "$PY" -m pytest --ignore=tests/unit --durations=15  # the slowest, to keep the run short
}

docker_ok() {
  command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 || {
    echo "No Docker engine here; use ./run.sh start instead" >&2; exit 1; }
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_restart ;;
  status) cmd_status ;;
  logs) cmd_logs ;;
  cli) shift; cmd_cli "$@" ;;
  test) shift; cmd_test "$@" ;;
  docker-start) docker_ok; docker compose up -d --build && echo "chat page: http://127.0.0.1:$PORT/" ;;
  docker-stop) docker_ok; docker compose down ;;
  docker-logs) docker_ok; docker compose logs -f ;;
  *)
    echo "usage: $0 start|stop|restart|status|logs|cli [rafale args]|test [pytest args]|docker-start|docker-stop|docker-logs" >&2
    exit 2
    ;;
esac
