"""How `rafale chat` turns a stream's events into stdout and an exit code (app/cli/chat.py).
Under pytest stdout is not a terminal, so the answer is held until it is complete."""

from __future__ import annotations

import pytest
import typer

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
