"""`rafale usage`: dates as Unix seconds, and the table with its totals (app/cli/usage.py)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from rich.console import Console, RenderableType

from app.cli.usage import to_seconds, usage_table


def rendered(renderable: RenderableType) -> str:
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(renderable)
    return out.getvalue()


def test_a_date_is_its_whole_utc_day() -> None:
    first = datetime(2025, 6, 1, tzinfo=UTC).timestamp()
    assert to_seconds("2025-06-01", end=False) == str(int(first))
    assert float(to_seconds("2025-06-01", end=True)) == first + 86_400 - 0.001


def test_seconds_and_anything_else_go_to_the_server_as_they_are() -> None:
    assert to_seconds("1750000000", end=True) == "1750000000"
    assert to_seconds("2025-13-45", end=False) == "2025-13-45"  # the server explains
    assert to_seconds("yesterday", end=False) == "yesterday"


def test_the_table_has_a_row_per_group_and_a_totals_row() -> None:
    data = {"object": "list", "data": [
        {"key": "alice", "model": "openai/gpt-4o", "requests": 1200, "input_tokens": 10,
         "output_tokens": 20, "cost_usd": 0.25, "estimated": False},
        {"key": "", "model": "mock/echo", "requests": 2, "input_tokens": 3,
         "output_tokens": 4, "cost_usd": 0.000002, "estimated": True}]}
    text = rendered(usage_table(data, ["key", "model"]))
    lines = text.splitlines()
    assert any("alice" in ln and "openai/gpt-4o" in ln and "1,200" in ln and "0.250000" in ln
               for ln in lines), text
    assert any("(open)" in ln and "mock/echo" in ln and "yes" in ln for ln in lines), text
    total = next(ln for ln in lines if "total" in ln)
    assert "1,202" in total and "0.250002" in total and "yes" in total, text


def test_without_groups_the_one_row_is_the_total() -> None:
    data = {"data": [{"requests": 3, "input_tokens": 1, "output_tokens": 2, "cost_usd": 1.5,
                      "estimated": False}]}
    text = rendered(usage_table(data, []))
    assert text.count("1.500000") == 2  # the row and the footer


def test_no_usage_is_an_empty_table_without_a_totals_row() -> None:
    text = rendered(usage_table({"object": "list", "data": []}, ["key", "model"]))
    assert "requests" in text and "total" not in text
