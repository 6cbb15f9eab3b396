"""How `rafale chat` turns a stream's events into stdout and an exit code (app/cli/chat.py).
Under pytest stdout is not a terminal, so the answer is held until it is complete."""

from __future__ import annotations

import json

import httpx
import pytest
import typer

from app.cli import chat as chat_module
from app.cli.chat import Answer
from app.cli.sse import Event


def chunk(text: str, eid: str | None = None) -> Event:
    return Event("chunk", eid, {"content": text})


def test_a_piped_answer_is_written_whole_with_a_newline_when_done(
        capsys: pytest.CaptureFixture[str]) -> None:
    answer = Answer(verbose=False)
    assert answer.feed(chunk("Hel")) is None
    assert answer.feed(chunk("lo")) is None
    assert capsys.readouterr().out == ""
    assert answer.feed(Event("done", None, {})) == 0
    assert capsys.readouterr() == ("Hello\n", "")


def test_a_reset_drops_the_lost_attempts_text(capsys: pytest.CaptureFixture[str]) -> None:
    answer = Answer(verbose=False)
    answer.feed(chunk("lost "))
    answer.feed(Event("reset", None, {}))
    answer.feed(chunk("kept"))
    answer.feed(Event("done", None, {}))
    out, err = capsys.readouterr()
    assert out == "kept\n"
    assert err == "[answer restarted: a worker was lost]\n"


def test_an_empty_answer_prints_no_blank_line(capsys: pytest.CaptureFixture[str]) -> None:
    answer = Answer(verbose=False)
    answer.feed(chunk(""))
    assert answer.feed(Event("done", None, {})) == 0
    assert capsys.readouterr().out == ""
    assert answer.first_chunk is None


def test_the_last_event_id_is_kept_for_resuming() -> None:
    answer = Answer(verbose=False)
    answer.feed(chunk("a", "1-0"))
    answer.feed(Event("ping", None, {}))
    assert answer.last_id == "1-0"


def test_an_error_event_prints_the_text_so_far_and_exits_1(
        capsys: pytest.CaptureFixture[str]) -> None:
    answer = Answer(verbose=False)
    answer.feed(chunk("partial"))
    with pytest.raises(typer.Exit) as exc:
        answer.feed(Event("error", None, {"message": "quota", "status": 429, "code": "rate"}))
    assert exc.value.exit_code == 1
    assert capsys.readouterr() == ("partial\n", "error: quota (HTTP 429, rate)\n")


def test_verbose_done_summarises_model_and_usage(capsys: pytest.CaptureFixture[str]) -> None:
    answer = Answer(verbose=True)
    answer.feed(Event("done", None, {"model": "mock/echo", "finish_reason": "stop", "usage": {
        "prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}))
    err = capsys.readouterr().err
    assert "mock/echo" in err and "1 prompt + 2 completion = 3" in err
    assert "first chunk  -" in err


# --- resuming a queued stream (stream_queued), over httpx's in-memory transport -------------


class Clock:
    """Stands in for the `time` module in app/cli/chat.py: sleeping only moves the clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    perf_counter = monotonic

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def sse(*events: tuple[str, str, dict[str, object]]) -> bytes:
    return b"".join(f"id: {eid}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode()
                    for kind, eid, data in events)


class Restarting:
    """`/stream/s` as `./run.sh restart` looks to a client: the first connection gives two
    chunks and ends without `done` (the old process drained it); then connections are refused
    for `down` seconds of the clock, then a 503 (the new API not ready yet); then the rest."""

    def __init__(self, clock: Clock, down: float) -> None:
        self.clock, self.down = clock, down
        self.seen: list[str | None] = []
        self.came_back: float | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        after = request.headers.get("last-event-id")
        if after is None:
            self.seen.append(after)
            return httpx.Response(200, content=sse(("chunk", "0", {"content": "Hel"}),
                                                   ("chunk", "1", {"content": "lo"})))
        if self.clock.now < self.down:
            raise httpx.ConnectError("connection refused", request=request)
        self.seen.append(after)
        if self.came_back is None:
            self.came_back = self.clock.now
            return httpx.Response(503, json={"error": {"message": "broker not ready"}})
        return httpx.Response(200, content=sse(("chunk", "2", {"content": " world"}),
                                               ("done", "3", {"finish_reason": "stop"})))


def run_queued(monkeypatch: pytest.MonkeyPatch, server: Restarting, clock: Clock) -> int:
    monkeypatch.setattr(chat_module, "time", clock)
    with httpx.Client(base_url="http://rafale", transport=httpx.MockTransport(server)) as c:
        return chat_module.stream_queued(c, "/stream/s", Answer(verbose=False))


def test_a_queued_answer_resumes_across_a_restart_of_half_a_minute(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    server = Restarting(clock, down=30)
    assert run_queued(monkeypatch, server, clock) == 0
    assert server.seen == [None, "1", "1"]  # the 503, then the rest after the same id
    out, err = capsys.readouterr()
    assert out == "Hello world\n"
    assert err == "[connection lost, resuming]\n"  # once, not once per try
    # The delays grow, then stay at 2 s: the client is back within 2 s of the server.
    assert max(clock.slept) == 2.0 and clock.slept[:3] == [0.2, 0.5, 1.0]
    assert server.came_back is not None and server.came_back - 30 < 2.0


def test_a_queued_answer_gives_up_after_the_window_and_keeps_the_piped_text(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    server = Restarting(clock, down=10 * chat_module.RESUME_WINDOW)
    answer = Answer(verbose=False)
    monkeypatch.setattr(chat_module, "time", clock)
    with httpx.Client(base_url="http://rafale", transport=httpx.MockTransport(server)) as c:
        with pytest.raises(typer.Exit) as exc:
            try:
                chat_module.stream_queued(c, "/stream/s", answer)
            finally:
                answer.end_line()  # as `chat` does however the stream ends
    assert exc.value.exit_code == 1
    assert chat_module.RESUME_WINDOW - 2 <= clock.now <= chat_module.RESUME_WINDOW
    out, err = capsys.readouterr()
    assert out == "Hello\n"  # piped: held until done, but never lost
    assert "did not come back within 60 s" in err
