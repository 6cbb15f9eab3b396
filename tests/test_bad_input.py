"""Malformed, oversized and nonsensical requests get a clear 4xx in OpenAI's envelope."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import httpx
import pytest

from tests.harness import ROOT, Stack


def assert_error(r: httpx.Response, status: int, *, code: str | None = None,
                 param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    if code is not None:
        assert err["code"] == code, err
    if param is not None:
        assert err["param"] == param, err
    assert r.headers["x-request-id"]
    return err


@pytest.mark.parametrize("path", ["/chat/async", "/chat"])
async def test_malformed_json(client: httpx.AsyncClient, path: str) -> None:
    r = await client.post(path, content=b'{"message": "unterminated',
                          headers={"content-type": "application/json"})
    err = assert_error(r, 400, code="invalid_json")
    assert "JSON" in err["message"]


@pytest.mark.parametrize("path", ["/chat/async", "/chat"])
@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({}, "missing_required_parameter", "message"),
        ({"model": "mock/echo"}, "missing_required_parameter", "message"),
        ({"message": ""}, "invalid_value", "message"),
        ({"message": 123}, "invalid_type", "message"),
        ({"messages": "hello"}, "invalid_type", "messages"),
        ({"messages": []}, "invalid_value", "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "invalid_value", "messages.0.role"),
        ({"messages": [{"role": "user"}]}, "missing_required_parameter", "messages.0.content"),
        ({"message": "hi", "temperature": "hot"}, "invalid_type", "temperature"),
        ({"message": "hi", "temperature": 9}, "invalid_value", "temperature"),
        ({"message": "hi", "max_tokens": 0}, "invalid_value", "max_tokens"),
        ({"message": "hi", "messages": [{"role": "user", "content": "x"}]}, "invalid_value", None),
        ([1, 2], "invalid_type", None),
    ],
)
async def test_invalid_bodies(client: httpx.AsyncClient, path: str, body: object, code: str,
                              param: str | None) -> None:
    r = await client.post(path, json=body)
    assert_error(r, 400, code=code, param=param)


async def test_unknown_provider_model_is_refused_before_queueing(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post("/chat/async", json={"message": "hi", "model": "deepseek/chat"})
    err = assert_error(r, 400, code="provider_not_configured", param="model")
    assert "DEEPSEEK_API_KEY" in err["message"]


@pytest.mark.parametrize("path", ["/chat/async", "/chat"])
async def test_ten_megabyte_body_is_refused_before_reading(client: httpx.AsyncClient,
                                                            path: str) -> None:
    big = b'{"message": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    r = await client.post(path, content=big, headers={"content-type": "application/json"})
    assert_error(r, 413, code="payload_too_large")


async def test_oversized_chunked_body_is_refused(client: httpx.AsyncClient) -> None:
    async def body():  # type: ignore[no-untyped-def]
        yield b'{"message": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    r = await client.post("/chat/async", content=body(),
                          headers={"content-type": "application/json"})
    assert_error(r, 413, code="payload_too_large")


async def test_unknown_route_and_method_use_the_envelope(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/nope"), 404)
    assert_error(await client.get("/chat/async"), 405)


async def test_request_id_is_echoed_or_made(client: httpx.AsyncClient) -> None:
    r = await client.get("/health", headers={"x-request-id": "trace-123"})
    assert r.headers["x-request-id"] == "trace-123"
    r = await client.get("/health", headers={"x-request-id": "bad id\twith junk"})
    assert r.headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize("path", ["/chat/async", "/chat", "/v1/chat/completions"])
@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded"])
async def test_a_body_not_sent_as_json_says_so(client: httpx.AsyncClient, path: str,
                                               content_type: str | None) -> None:
    # What `curl -d '{"message": "hi"}'` without -H sends (its default is a form's type).
    r = await client.post(path, content=b'{"message": "hi"}',
                          headers={"content-type": content_type} if content_type else {})
    err = assert_error(r, 415, code="unsupported_media_type")
    assert "content-type: application/json" in err["message"]
    assert (content_type or "none") in err["message"]


@pytest.mark.parametrize("path", ["/chat/async", "/chat"])
async def test_an_empty_json_body_asks_for_one(client: httpx.AsyncClient, path: str) -> None:
    r = await client.post(path, content=b"", headers={"content-type": "application/json"})
    err = assert_error(r, 400, code="missing_required_parameter")
    assert err["message"] == "The request has no body: send a JSON object"


def test_bad_setting_fails_at_start_naming_it() -> None:
    for name, value in [("WORKER_CONCURRENCY", "lots"), ("PORT", "99999"),
                        ("RABBITMQ_URL", "http://x"), ("PROVIDER_TOTAL_TIMEOUT", "7200"),
                        ("SESSION_TTL", "3600")]:
        proc = subprocess.run(
            [sys.executable, "-m", "app.settings"], cwd=ROOT, capture_output=True, text=True,
            env={"PATH": "/usr/bin:/bin", name: value}, timeout=30,
        )
        assert proc.returncode == 2, (name, proc.stderr)
        shown = "RABBITMQ_URL" if name == "RABBITMQ_URL" else name
        assert shown in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("path", "body", "code", "param"),
    [
        ("/v1/translate", {"text": [], "target_lang": "DE"}, "invalid_value", "text"),
        ("/v1/translate", {"text": "x", "target_lang": "DE"}, "invalid_type", "text"),
        ("/v1/translate", {"text": ["x"]}, "missing_required_parameter", "target_lang"),
        ("/v1/translate", {"text": ["x"] * 51, "target_lang": "DE"}, "invalid_value", "text"),
        ("/v1/translate", {"text": ["x"], "target_lang": "DE", "formality": "rude"},
         "invalid_value", "formality"),
        ("/v1/batches", {"endpoint": "/v1/chat/completions", "completion_window": "24h"},
         "missing_required_parameter", "input_file_id"),
        ("/v1/batches", {"input_file_id": "file-x", "endpoint": "/v1/chat/completions",
                         "completion_window": "24h",
                         "metadata": {f"k{i}": "v" for i in range(17)}},
         "invalid_value", "metadata"),
        ("/v1/batches", {"input_file_id": "file-x", "endpoint": "/v1/chat/completions",
                         "completion_window": "24h", "output_expires_after": {"seconds": 10}},
         None, None),
    ],
)
async def test_v1_bodies_are_checked_before_anything_runs(client: httpx.AsyncClient, path: str,
                                                         body: object, code: str | None,
                                                         param: str | None) -> None:
    err = assert_error(await client.post(path, json=body), 400, code=code)
    if param is not None:
        assert err["param"] is not None and err["param"].startswith(param), err
    else:
        assert (err["param"] or "").startswith("output_expires_after"), err


@pytest.mark.parametrize("path", ["/v1/translate", "/v1/batches", "/v1/chat/completions"])
async def test_v1_malformed_and_oversized_bodies(client: httpx.AsyncClient, path: str) -> None:
    r = await client.post(path, content=b'{"text": ["unterminated',
                          headers={"content-type": "application/json"})
    assert_error(r, 400, code="invalid_json")
    big = b'{"text": ["' + b"x" * (2 * 1024 * 1024) + b'"]}'
    r = await client.post(path, content=big, headers={"content-type": "application/json"})
    assert_error(r, 413, code="payload_too_large")


@pytest.mark.parametrize("limit", ["0", "101", "many"])
async def test_batch_list_limit_is_checked(client: httpx.AsyncClient, limit: str) -> None:
    err = assert_error(await client.get(f"/v1/batches?limit={limit}"), 400, param="limit")
    assert err["code"] in ("invalid_value", "invalid_type")


async def test_round_trip_parameters_are_checked(client: httpx.AsyncClient) -> None:
    for wait in ("0", "61", "soon"):
        assert_error(await client.get(f"/test?wait={wait}"), 400, param="wait")
    assert_error(await client.get("/test?model=mock/nope"), 404, code="model_not_found")


async def test_unknown_batch_is_404_on_every_batch_route(client: httpx.AsyncClient) -> None:
    for method, path in [("GET", "/v1/batches/batch_nope"),
                         ("POST", "/v1/batches/batch_nope/cancel"),
                         ("GET", "/v1/batches/batch_nope/events")]:
        err = assert_error(await client.request(method, path), 404)
        assert "batch_nope" in err["message"], err


@pytest.mark.parametrize("wait", ["5e-324", "1e-9", "0.01", "1e308", "nan", "inf", "-inf"])
async def test_round_trip_wait_out_of_range_is_a_400_never_a_500(client: httpx.AsyncClient,
                                                                wait: str) -> None:
    assert_error(await client.get(f"/test?wait={wait}"), 400, param="wait")


LONE = "\ud800"
SURROGATE_CASES = [
    ("/chat/async", {"message": "hi", "system": LONE}, "system"),
    ("/chat/async", {"messages": [{"role": "user", "content": f"x{LONE}"}]},
     "messages.0.content"),
    ("/chat", {"message": LONE}, "message"),
    ("/v1/chat/completions", {"model": "mock/echo",
                              "messages": [{"role": "user", "content": LONE}]},
     "messages.0.content"),
    ("/v1/chat/completions", {"model": "mock/echo", "user": LONE,
                              "messages": [{"role": "user", "content": "hi"}]}, "user"),
    ("/v1/chat/completions", {"model": "mock/echo", "metadata": {"k": LONE},
                              "messages": [{"role": "user", "content": "hi"}]}, "metadata.k"),
    ("/v1/translate", {"text": [LONE], "target_lang": "DE"}, "text.0"),
    ("/v1/batches", {"input_file_id": "file-x", "endpoint": "/v1/chat/completions",
                     "completion_window": "24h", "metadata": {"k": LONE}}, "metadata.k"),
]


async def test_a_lone_surrogate_is_a_400_naming_the_field_with_one_log_line(
        client: httpx.AsyncClient, stack: Stack) -> None:
    log = stack.log_path("api")
    start = log.stat().st_size
    ids = []
    for i, (path, body, param) in enumerate(SURROGATE_CASES):
        rid = f"surrogate-{uuid.uuid4().hex[:8]}-{i}"
        ids.append(rid)
        # json.dumps writes the lone surrogate as the escape `\ud800`, as any client would.
        r = await client.post(path, content=json.dumps(body).encode(),
                              headers={"content-type": "application/json", "x-request-id": rid})
        err = assert_error(r, 400, code="invalid_value", param=param)
        assert "surrogate" in err["message"], (path, err)
    with log.open(errors="replace") as f:
        f.seek(start)
        written = f.read()
    assert "Traceback" not in written, written[-3000:]
    for rid in ids:
        assert sum(rid in line for line in written.splitlines()) == 1, (rid, written[-3000:])
