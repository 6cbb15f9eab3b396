"""`rafale health`'s table: the full checks for an admin key, the status alone for any other."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from app.cli.info import health_grid


def rendered(data: dict[str, Any]) -> str:
    console = Console(record=True, width=120)
    console.print(health_grid(data))
    return console.export_text()


def test_a_status_only_answer_says_the_detail_is_for_admins() -> None:
    text = rendered({"status": "ok"})
    assert "ok" in text and "admin keys" in text
    assert "not connected" not in text  # no made-up broker state


def test_the_full_answer_shows_the_checks() -> None:
    text = rendered({"status": "degraded", "checks": {
        "broker": {"connected": False, "error": "cannot connect"},
        "providers": {"configured": ["mock"], "default_model": "mock/echo"}}})
    assert "degraded" in text and "not connected (cannot connect)" in text
    assert "admin keys" not in text
