"""Prometheus metrics (prometheus-client).

Each process builds one `Metrics` and hands it to whatever records. With
PROMETHEUS_MULTIPROC_DIR set (entrypoint.sh sets it for the API; the worker supervisor sets its
own for its children), every process writes its samples to files in that directory and one
exposition sums them, so a scrape that lands on any uvicorn process sees the whole API."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from app.pricing import NANO

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Seconds: from a fast enqueue (ms) to a long generation (minutes).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
STREAM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_LIVE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")

# prometheus-client leaves these unannotated: their types as Rafale calls them, stated once
# for every caller (API and worker supervisor) instead of an ignore at each call.
_value_class: Callable[[], type] = values.get_value_class
collect_multiprocess: Callable[[CollectorRegistry, str], object] = MultiProcessCollector
mark_dead: Callable[[int, str], None] = mark_process_dead


def multiproc_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """Every metric Rafale records. API and workers share one class: each records its part."""

    def __init__(self) -> None:
        path = multiproc_dir()
        if path:
            Path(path).mkdir(parents=True, exist_ok=True)
        # prometheus-client chooses file-backed values at import time; choose again now, so the
        # result does not depend on whether something imported it before the env was set.
        values.ValueClass = _value_class()
        r = self.registry = CollectorRegistry(auto_describe=True)

        # --- HTTP (API processes)
        self.http_requests = Counter(
            "rafale_http_requests_total", "HTTP requests by route template and status",
            ["method", "route", "status"], registry=r)
        self.http_seconds = Histogram(
            "rafale_http_request_duration_seconds",
            "Time from request to the end of the response (streams: the whole stream)",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=r)
        self.enqueue_seconds = Histogram(
            "rafale_enqueue_seconds", "Session declare + task publish until RabbitMQ confirmed",
            buckets=LATENCY_BUCKETS, registry=r)
        self.streams_open = Gauge(
            "rafale_sse_streams_open", "SSE responses being relayed right now",
            multiprocess_mode="livesum", registry=r)

        # --- provider calls (workers, and the API's direct mode)
        self.first_chunk_seconds = Histogram(
            "rafale_provider_first_chunk_seconds",
            "From the provider call (first attempt) to its first chunk",
            ["provider"], buckets=LATENCY_BUCKETS, registry=r)
        self.stream_seconds = Histogram(
            "rafale_provider_stream_seconds",
            "From the provider call (first attempt) to its last chunk",
            ["provider"], buckets=STREAM_BUCKETS, registry=r)
        self.provider_errors = Counter(
            "rafale_provider_errors_total", "Provider calls that ended in an error, by code",
            ["provider", "code"], registry=r)
        self.retries = Counter(
            "rafale_provider_retries_total", "Provider attempts retried after a retryable error",
            ["provider"], registry=r)

        # --- tasks (workers)
        self.tasks = Counter(
            "rafale_tasks_total", "Tasks a worker finished, by outcome",
            ["kind", "outcome"], registry=r)
        self.queue_wait_seconds = Histogram(
            "rafale_task_queue_wait_seconds", "From enqueue to a worker starting the task",
            ["kind"], buckets=LATENCY_BUCKETS, registry=r)
        self.cache_hits = Counter(
            "rafale_response_cache_hits_total",
            "Batch requests answered from the response cache or a shared call", registry=r)
        self.in_flight = Gauge(
            "rafale_worker_in_flight", "Tasks being worked on right now",
            multiprocess_mode="livesum", registry=r)
        self._usage_metrics(r)

    def _usage_metrics(self, r: CollectorRegistry) -> None:
        """Usage and spend, wherever a request reaches a provider (workers, and the API for
        /chat and /v1/translate). `key` is the API key's name ("anon" when open), never the
        key: one series per key and provider (not per model: clients choose model names)."""
        self.tokens = Counter(
            "rafale_tokens_total",
            "Tokens of finished requests (the provider's count, or Rafale's estimate where it "
            "gave none)", ["provider", "direction", "key"], registry=r)
        self.cost_usd = Counter(
            "rafale_cost_usd_total", "What finished requests cost, from MODEL_PRICES_FILE",
            ["provider", "key"], registry=r)
        self.usage_dropped = Counter(
            "rafale_usage_records_dropped_total",
            "Usage records never written (the store was down past the recorder's buffer)",
            registry=r)
        self._spend_series: dict[tuple[str, str], tuple[Counter, Counter, Counter]] = {}

    def observe_spend(self, provider: str, key: str, input_tokens: int, output_tokens: int,
                      cost_nano: int) -> None:
        """A finished request's tokens and cost (app/usage_recorder.py records them all)."""
        series = self._spend_series.get((provider, key))
        if series is None:
            # `labels()` costs more than the increments: look each series up once. As many
            # entries as series (keys x providers), so this stays small.
            who = key or "anon"
            series = self._spend_series[(provider, key)] = (
                self.tokens.labels(provider, "in", who), self.tokens.labels(provider, "out", who),
                self.cost_usd.labels(provider, who))
        tokens_in, tokens_out, cost = series
        if input_tokens > 0:
            tokens_in.inc(input_tokens)
        if output_tokens > 0:
            tokens_out.inc(output_tokens)
        if cost_nano > 0:
            cost.inc(cost_nano / NANO)

    def exposition(self, live: Iterable[Metric] = ()) -> bytes:
        """The text format: this process's metrics (or every process's, in multiprocess mode)
        followed by `live` families computed at scrape time (queue depths, ...)."""
        path = multiproc_dir()
        if path:
            reap_dead(path)
            registry = CollectorRegistry()
            collect_multiprocess(registry, path)
            out = generate_latest(registry)
        else:
            out = generate_latest(self.registry)
        families = list(live)
        if families:
            out += generate_latest(_Families(families))
        return out


class _Families:
    """A registry-like holder for metric families built per scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def reap_dead(path: str) -> None:
    """Drop the live gauges of processes that are gone (a restarted uvicorn or worker process),
    so `livesum` gauges do not keep counting what a dead process had in flight."""
    for entry in os.scandir(path):
        m = _LIVE_FILE.match(entry.name)
        if m is None:
            continue
        pid = int(m.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            # Another API process may be reaping the same files at the same moment.
            with contextlib.suppress(FileNotFoundError):
                mark_dead(pid, path)
        except PermissionError:
            pass  # alive, owned by someone else
