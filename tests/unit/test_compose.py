"""docker-compose.yml stays closed: only the proxy (and the gRPC door, which takes keys) is
published, the broker and the database
have passwords of their own from .env (compose refuses to start without them), the API never
runs open. Read as compose would after interpolating `${VAR}`, `${VAR:-default}` and
`${VAR:?message}` (no Docker needed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
_VAR = re.compile(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}")
REQUIRED = ("RABBITMQ_DEFAULT_USER", "RABBITMQ_DEFAULT_PASS", "POSTGRES_PASSWORD")
DOTENV = {"RABBITMQ_DEFAULT_USER": "rafale", "RABBITMQ_DEFAULT_PASS": "broker-pass-0123",
          "POSTGRES_PASSWORD": "db-pass-0123", "RAFALE_API_KEYS": "alice:" + "k" * 24}


class Missing(Exception):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        value = env.get(name, "")
        if op == ":?" and not value:
            raise Missing(f"{name}: {arg}")
        if op == ":-" and not value:
            return arg
        return value

    return _VAR.sub(one, text)


def compose(env: dict[str, str]) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(interpolate(
        (ROOT / "docker-compose.yml").read_text(), env))
    return loaded


@pytest.mark.parametrize("name", REQUIRED)
def test_compose_refuses_to_start_without_each_password(name: str) -> None:
    with pytest.raises(Missing, match=f"^{name}: set {name} in .env"):
        compose({k: v for k, v in DOTENV.items() if k != name})


def test_only_the_proxy_and_the_grpc_door_are_published_on_every_interface() -> None:
    services = compose(DOTENV)["services"]
    published = {name: s.get("ports", []) for name, s in services.items() if s.get("ports")}
    assert published == {"nginx": ["8007:8080"], "grpc": ["50051:50051"],
                         "rabbitmq": ["127.0.0.1:15672:15672"]}
    # The gRPC door has no proxy in front: it takes keys itself, and never runs open.
    assert services["grpc"]["environment"]["RAFALE_OPEN"] == "false"
    assert "ports" not in services["api"] and "ports" not in services["worker"]


def test_the_services_use_the_passwords_from_dotenv() -> None:
    services = compose(DOTENV)["services"]
    for role in ("api", "worker"):
        env = services[role]["environment"]
        assert env["RABBITMQ_URL"] == "amqp://rafale:broker-pass-0123@rabbitmq:5672/"
        assert env["DATABASE_URL"] == "postgresql://rafale:db-pass-0123@postgres:5432/rafale"
        assert "guest" not in env["RABBITMQ_URL"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "db-pass-0123"


def test_every_api_and_worker_counts_in_the_same_redis() -> None:
    """The API reserves tokens and the workers settle them: one set of counters for all."""
    services = compose(DOTENV)["services"]
    for role in ("api", "worker"):
        assert services[role]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert services[role]["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert "ports" not in services["redis"]
    # Counters must never be evicted to make room: a lost count would let a key past its cap.
    command = services["redis"]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"


def test_the_api_needs_keys_and_never_runs_open() -> None:
    env = compose(DOTENV)["services"]["api"]["environment"]
    assert env["RAFALE_OPEN"] == "false"
    assert env["RAFALE_API_KEYS"] == DOTENV["RAFALE_API_KEYS"]


def test_worker_metrics_listen_on_the_private_network_only() -> None:
    worker = compose(DOTENV)["services"]["worker"]
    assert worker["environment"]["WORKER_METRICS_HOST"] == "0.0.0.0"
    assert worker["expose"] == ["9108"] and "ports" not in worker


def test_the_proxy_config_is_the_one_shipped() -> None:
    nginx = compose(DOTENV)["services"]["nginx"]
    source = nginx["volumes"][0].split(":")[0]
    assert (ROOT / source).resolve() == (ROOT / "deploy/nginx/rafale.conf").resolve()
    assert Path(ROOT / source).is_file()


def test_dotenv_example_names_every_required_variable() -> None:
    example = (ROOT / ".env.example").read_text()
    for name in (*REQUIRED, "RAFALE_API_KEYS", "RAFALE_ADMIN_KEYS"):
        assert re.search(rf"^{name}=", example, re.M), name
