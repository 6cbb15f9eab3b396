"""One Settings class for every process (API, workers, CLI), read from env and `.env`."""

from __future__ import annotations

import os
import re
import sys
from functools import lru_cache
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, BaseModel, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.auth import KeyRing
from app.pricing import load_prices

PositiveFloat = Annotated[float, Field(gt=0)]
BUILTIN_PROVIDERS = ("openai", "deepseek", "deepl", "mock")


class Endpoint(BaseModel):
    """A named OpenAI-compatible server (vLLM, Ollama, LM Studio, a second OpenAI account):
    `ENDPOINTS__VLLM__BASE_URL=http://vllm:8000/v1` routes `vllm/<model>` there."""

    base_url: str = Field(pattern=r"^https?://")
    api_key: str = Field("", repr=False)
    models: str = ""  # comma-separated, for GET /v1/models
    # The server speaks OpenAI's Responses API itself: `/v1/responses` requests are passed
    # to its `/responses` (Rafale still keeps their state); otherwise they are translated
    # onto chat completions, which every OpenAI-compatible server has.
    responses: bool = False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False,
        env_nested_delimiter="__",
    )

    # --- broker and topology
    rabbitmq_url: str = Field(
        "amqp://guest:guest@127.0.0.1:5672/",
        validation_alias=AliasChoices("RABBITMQ_URL", "RABBIT_MQ"),
    )
    rafale_namespace: str = Field("rafale", pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    # Seconds an unused session queue lives. Under RabbitMQ's consumer timeout (30 min): a
    # reader holds its session's events unacked while it streams, and past that timeout the
    # broker would close the channel.
    session_ttl: float = Field(300.0, gt=0, lt=1800)
    # Answer events written to disk, so an answer not read yet survives a broker restart; off
    # trades that for broker CPU (bench: /chat/async 209 -> 324 req/s on 2 cores).
    session_events_persistent: bool = True
    # A task that kills this many workers is parked in the dead-letter queue.
    task_max_deliveries: int = Field(3, ge=1, le=100)
    publish_timeout: PositiveFloat = 5.0

    # --- HTTP front end
    host: str = "0.0.0.0"
    port: int = Field(8007, ge=1, le=65535)
    uvicorn_workers: int = Field(2, ge=1, le=64)
    max_body_bytes: int = Field(1_048_576, ge=1024)
    sse_ping_interval: PositiveFloat = 15.0
    # A stream's session is kept this long after its reader left (mid-answer, or once sent
    # `done`, which may have gone into a dead connection) for a reconnect with Last-Event-ID,
    # from any replica; then it is deleted, which stops a worker still generating. Longer than
    # a browser's EventSource retry (~3 s) and a phone changing networks.
    stream_resume_grace: float = Field(30.0, ge=0)
    stream_send_timeout: PositiveFloat = 30.0

    # --- gRPC front end (app/grpc/, role `grpc`)
    grpc_host: str = "0.0.0.0"
    grpc_port: int = Field(50051, ge=1, le=65535)
    # Largest request or response message, in bytes (gRPC's own default is 4 MiB).
    grpc_max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024, le=2**31 - 1)
    # RPCs served at once; past it a new call is refused with RESOURCE_EXHAUSTED.
    grpc_max_concurrent_rpcs: int = Field(1024, ge=1, le=1_000_000)
    # TLS when both are set (PEM files); plaintext otherwise.
    grpc_tls_cert: str = ""
    grpc_tls_key: str = ""
    grpc_reflection: bool = True

    # --- workers
    llm_workers: int = Field(2, ge=1, le=256)
    worker_concurrency: int = Field(64, ge=1, le=10_000)
    shutdown_grace: float = Field(20.0, ge=0)
    # Tokens arriving faster than this are coalesced into one chunk event; the first goes at once.
    stream_flush_interval: float = Field(0.05, ge=0, le=1)
    heartbeat_interval: PositiveFloat = 5.0
    # The worker supervisor serves its processes' Prometheus metrics here; 0 turns it off.
    worker_metrics_port: int = Field(9108, ge=0, le=65535)

    # --- providers
    default_model: str = ""  # empty: derived from which provider keys are set
    openai_api_key: str = Field("", repr=False)
    openai_base_url: str = "https://api.openai.com/v1"
    deepseek_api_key: str = Field("", repr=False)
    deepseek_base_url: str = "https://api.deepseek.com/v1"
    # What `GET /v1/models` lists per provider (comma-separated); other names still route.
    openai_models: str = "gpt-4o-mini,gpt-4o,gpt-4.1-mini,gpt-4.1"
    deepseek_models: str = "deepseek-chat,deepseek-reasoner"
    endpoints: dict[str, Endpoint] = Field(default_factory=dict)
    deepl_api_key: str = Field("", repr=False)
    deepl_base_url: str = ""  # empty: the free or pro host, chosen by the key
    deepl_languages: str = "DE,EN-GB,EN-US,ES,FR,IT,JA,NL,PL,PT-BR,ZH"
    provider_connect_timeout: PositiveFloat = 5.0
    provider_first_byte_timeout: PositiveFloat = 60.0
    provider_idle_timeout: PositiveFloat = 30.0
    # Must stay under RabbitMQ's consumer timeout (30 min by default).
    provider_total_timeout: float = Field(600.0, gt=0, lt=1800)
    provider_max_attempts: int = Field(3, ge=1, le=20)
    retry_backoff_base: float = Field(0.5, ge=0)
    retry_backoff_max: float = Field(8.0, ge=0)
    mock_tokens: int = Field(24, ge=1, le=100_000)
    mock_delay: float = Field(0.02, ge=0, le=60)  # seconds between mock tokens
    # Fault injection for operators and tests: model `mock/crash` kills the worker process.
    mock_crash_enabled: bool = False

    # --- store and batches
    # Empty: a SQLite file in DATA_DIR (one host). `postgresql://user@host/db` for several.
    database_url: str = Field("", repr=False)
    data_dir: str = "data"
    # PostgreSQL connections one process keeps open (and may open beyond, under load): every
    # API and worker process of every host together must fit the server's max_connections.
    database_pool_size: int = Field(4, ge=1, le=1000)
    database_max_overflow: int = Field(4, ge=0, le=1000)
    file_max_bytes: int = Field(200 * 1024 * 1024, ge=1024)
    # Completion windows allowed besides OpenAI's `24h`, e.g. `1h,30m` (s, m, h, d units).
    batch_completion_windows: str = ""
    batch_max_requests: int = Field(50_000, ge=1)
    # Batch requests one worker process runs at once (interactive chat has its own share).
    batch_concurrency: int = Field(32, ge=1, le=10_000)
    # Lines per llm_batch message: one claim and one result write per group, not per line.
    batch_group_size: int = Field(50, ge=1, le=1000)
    batch_max_attempts: int = Field(8, ge=1, le=100)
    # Fleet-wide caps on concurrent batch requests per provider, e.g. `openai=16,deepl=4`.
    provider_concurrency: str = ""
    # Days the per-line rows of an ended batch are kept (its counts and files stay).
    batch_retention_days: float = Field(30.0, gt=0)
    # How often a worker looks for expired batches and stalled finalizations.
    batch_sweep_interval: PositiveFloat = 5.0
    # Days a stored conversation is kept after its last use (a new item, a rename); 0: forever.
    conversation_retention_days: float = Field(30.0, ge=0)
    # Seconds identical deterministic requests (temperature 0 or a seed) reuse an answer; 0: off.
    response_cache_ttl: float = Field(0.0, ge=0)

    # --- per-key limits (app/limits.py); a key's line in RAFALE_API_KEYS_FILE may set its own
    # (`name:key rpm=600 tpm=200000 sessions=50 budget_usd=20 storage_bytes=1e9`). 0 = off.
    # Sessions a key holds at once: queued, generating, or finished and not read yet.
    key_max_sessions: int = Field(200, ge=0)
    key_rpm: int = Field(0, ge=0)  # requests a minute, on routes that reach a provider or queue
    key_tpm: int = Field(0, ge=0)  # tokens a minute: prompt estimate + max_tokens, then settled
    key_budget_usd: float = Field(0.0, ge=0)  # spend a calendar month (UTC)
    key_max_storage_bytes: int = Field(10 * 1024**3, ge=0)  # bytes of files a key may hold
    # Live sessions of all keys together: each holds one of the broker's file descriptors, and a
    # broker out of them fails every client. Beyond it: 503 with Retry-After. 0 = off.
    max_sessions: int = Field(500, ge=0)
    # Where the counts above live: empty, in the store (a transaction per admission, ~5 ms);
    # `redis://host:6379/0`, in Redis (one round trip, ~0.2 ms). Every process the same.
    redis_url: str = Field("", repr=False)

    # --- usage and spend (S3)
    # JSON: {"provider/model" or "provider/*": {"input": USD, "output": USD} per 1M tokens},
    # over the built-in table (app/pricing.py). DeepL's tokens are characters.
    model_prices_file: str = ""

    # --- secure defaults (issue 10, S1)
    # No key configured: the API refuses to start unless this says the operator chose an open
    # gateway (`./run.sh start` sets it for its loopback-only default).
    rafale_open: bool = False
    # Key *names* (comma-separated) whose callers see operator detail: /stats, /metrics and
    # /health/full's checks. Every other key gets the status only.
    rafale_admin_keys: str = ""
    # Seconds a request body has to arrive whole (uploads get more, by their size: see
    # app/api/middleware_body.py); a body trickled slower is cut with 408.
    request_body_timeout: PositiveFloat = 30.0
    # Bounds entrypoint.sh gives uvicorn (per API process): idle keep-alive seconds, open
    # connections and tasks before it answers 503, and the listen backlog.
    uvicorn_timeout_keep_alive: int = Field(5, ge=1, le=300)
    uvicorn_limit_concurrency: int = Field(2048, ge=16, le=1_000_000)
    uvicorn_backlog: int = Field(2048, ge=16, le=65535)
    # Where the worker supervisor's metrics listen. They take no key: loopback unless told.
    worker_metrics_host: str = "127.0.0.1"

    # --- lanes: fair scheduling and the broker's own bounds (S2)
    # Task queues (`llm_tasks.<n>`): each key's tasks go to one, chosen by a hash of the key,
    # so one key's backlog waits in its own lane while workers take from every lane. Every API
    # and worker process must use the same number.
    task_lanes: int = Field(16, ge=1, le=256)
    # Tasks waiting in one lane (and their bytes); a publish beyond either is refused: 503.
    task_queue_max: int = Field(10_000, ge=1)
    task_queue_max_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    # Bytes of unread events one session queue holds; beyond it the worker stops generating.
    session_max_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    # Parked (dead-lettered) tasks kept for the operator: the oldest go first beyond the count,
    # and each goes after this many seconds.
    dead_letter_max: int = Field(10_000, ge=1)
    dead_letter_ttl: float = Field(7 * 86_400.0, gt=0, le=4_294_967)  # x-message-ttl: 32 bits of ms

    # `name:key,name:key` (or a file with one `name:key` a line), keys of 20+ characters.
    rafale_api_keys: str = Field("", repr=False)
    rafale_api_keys_file: str = ""
    log_format: str = Field("text", pattern=r"^(text|json)$")
    # Origins allowed to call the API from a browser; empty: CORS stays off.
    cors_origins: str = ""
    log_level: str = Field("INFO", pattern=r"(?i)^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if not self.rabbitmq_url.startswith(("amqp://", "amqps://")):
            raise ValueError("RABBITMQ_URL must start with amqp:// or amqps://")
        self.key_ring()  # fail at start if bad
        self.provider_caps()  # fail at start if bad
        for name in self.endpoints:
            if name in BUILTIN_PROVIDERS or not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", name):
                raise ValueError(f"ENDPOINTS__{name.upper()}: an endpoint name must be lower-case "
                                 f"letters, digits, - or _, and not one of {BUILTIN_PROVIDERS}")
        self._check_default_model()
        return self

    @model_validator(mode="after")
    def _check_grpc_tls(self) -> Settings:
        if bool(self.grpc_tls_cert) != bool(self.grpc_tls_key):
            raise ValueError("GRPC_TLS_CERT and GRPC_TLS_KEY go together: set both for TLS, "
                             "or neither for plaintext")
        for name, path in (("GRPC_TLS_CERT", self.grpc_tls_cert),
                           ("GRPC_TLS_KEY", self.grpc_tls_key)):
            if path and not os.access(path, os.R_OK):
                raise ValueError(f"{name}: {path} is not a readable file")
        if self.grpc_port == self.port:
            # Both listen with SO_REUSEPORT: the kernel would share connections between them.
            raise ValueError("GRPC_PORT and PORT must differ")
        return self

    @model_validator(mode="after")
    def _check_prices(self) -> Settings:
        load_prices(self.model_prices_file)  # fail at start if bad, naming MODEL_PRICES_FILE
        return self

    def _check_default_model(self) -> None:
        # Bare names are routed to DEFAULT_MODEL's provider: one that does not exist would fail
        # every such request (and every request naming no model) instead of failing here.
        provider, _, model = self.default_model.partition("/")
        if self.default_model and (not model or provider not in (*BUILTIN_PROVIDERS,
                                                                 *self.endpoints)):
            raise ValueError("DEFAULT_MODEL must be `provider/model`, the provider one of "
                             f"{BUILTIN_PROVIDERS} or an ENDPOINTS__<NAME>")

    def key_ring(self) -> KeyRing | None:
        """The configured API keys and their admins; None when no key is configured."""
        return KeyRing.load(self.rafale_api_keys, self.rafale_api_keys_file,
                            self.rafale_admin_keys)

    def api_refusal(self) -> str | None:
        """Why an API process must not start with these settings (None: it may). Workers and
        the CLI serve nobody over HTTP, so only the API asks."""
        if self.rafale_open or self.key_ring() is not None:
            return None
        return ("refusing to start the API: no API key is configured, and a gateway open to "
                "anyone must be chosen. Set RAFALE_API_KEYS (`name:key,...`, keys of 20+ "
                "characters) or RAFALE_API_KEYS_FILE, or set RAFALE_OPEN=true to serve every "
                "caller without a key.")

    def provider_caps(self) -> dict[str, int]:
        """PROVIDER_CONCURRENCY as {provider: cap}."""
        caps = {}
        for entry in filter(str.strip, self.provider_concurrency.split(",")):
            name, _, value = entry.partition("=")
            if not name.strip() or not value.strip().isdigit() or int(value) < 1:
                raise ValueError(f"PROVIDER_CONCURRENCY: `{entry.strip()}` is not provider=N")
            caps[name.strip()] = int(value)
        return caps

    def namespaced(self, name: str) -> str:
        """A broker name (queue or exchange) in this deployment's namespace, so deployments
        sharing one RabbitMQ never see each other's: `<RAFALE_NAMESPACE>.<name>`."""
        return f"{self.rafale_namespace}.{name}"

    @property
    def resolved_default_model(self) -> str:
        if self.default_model:
            return self.default_model
        if self.openai_api_key:
            return "openai/gpt-4o-mini"
        if self.deepseek_api_key:
            return "deepseek/deepseek-chat"
        for name, endpoint in self.endpoints.items():
            first = endpoint.models.split(",")[0].strip()
            if first:
                return f"{name}/{first}"
        return "mock/echo"


def describe_error(exc: ValidationError) -> str:
    """One line per bad setting, named as the operator writes it (upper case env name)."""
    lines = []
    for err in exc.errors():
        # Nested settings join like their env names: ENDPOINTS__VLLM__BASE_URL.
        name = "__".join(str(p) for p in err["loc"]).upper()
        # pydantic's "Value error, " prefix says nothing to an operator.
        msg = str(err["msg"]).removeprefix("Value error, ")
        # A check across settings has no single name: its message names what it checks.
        lines.append(f"invalid setting {name}: {msg}" if name else f"invalid setting: {msg}")
    return "\n".join(lines)


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    text = str(value)
    parts = urlsplit(text) if "://" in text else None
    if parts and parts.password:  # amqp://guest:guest@host/: the user, not the password
        host = parts.netloc.rpartition("@")[2]
        text = urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
    return text


def effective_values(settings: Settings) -> list[str]:
    """`NAME=value` for every setting as this process sees it; a secret (a key, a URL that may
    hold a password: every field declared `repr=False`) only as `(set)` or empty."""
    lines = []
    for name, field in type(settings).model_fields.items():
        value = getattr(settings, name)
        if name == "endpoints":
            for ep, spec in value.items():
                prefix = f"ENDPOINTS__{ep.upper()}__"
                lines += [f"{prefix}BASE_URL={_shown(spec.base_url)}",
                          f"{prefix}API_KEY={'(set)' if spec.api_key else ''}",
                          f"{prefix}MODELS={spec.models}"]
            continue
        if not field.repr:
            shown = "(set)" if value else ""
        elif name == "default_model" and not value:
            shown = f"{settings.resolved_default_model} (derived)"
        else:
            shown = _shown(value)
        lines.append(f"{name.upper()}={shown}")
    return lines


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def main(argv: list[str] | None = None) -> int:
    """`python -m app.settings [api|grpc|worker|all]`: validate the configuration before a process
    starts; for a role that runs the API (`api`, `all`), also that it may start (keys, or
    RAFALE_OPEN)."""
    role = (sys.argv[1:] if argv is None else argv)[:1]
    try:
        settings = Settings()
    except ValidationError as exc:
        print(describe_error(exc), file=sys.stderr)
        return 2
    refusal = settings.api_refusal() if role and role[0] in ("api", "grpc", "all") else None
    if refusal:
        print(refusal, file=sys.stderr)
        return 2
    if not role:  # a person asking (entrypoint.sh names a role and wants no listing)
        print("configuration OK", *effective_values(settings), sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
