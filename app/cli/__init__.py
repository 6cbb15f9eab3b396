"""The `rafale` command: chat from a terminal, list models, check health, run batches.

root.py builds the command tree; chat.py, info.py (models, health) and batch.py hold the
commands; common.py the HTTP client, its errors and the consoles; sse.py the event-stream
parser; records.py turns records into batch lines; batch_files.py, batch_follow.py and
batch_view.py upload/download, follow and show batches."""

from __future__ import annotations


def main() -> None:
    """The `rafale` entry point (pyproject's `app.cli:main`). The command tree is imported here,
    not at package import, so the pure modules (records, sse) load without typer or httpx."""
    from app.cli.root import main as run

    run()
