"""Every Rafale process of this run logged at DEBUG (tests/harness.py): no configured secret,
client key or provider key, may appear in any of those logs."""

from __future__ import annotations

import pytest

from tests.conftest import SECRETS
from tests.harness import ARTIFACTS


@pytest.mark.last
def test_no_configured_secret_reaches_any_log(namespace: str) -> None:
    logs = sorted((ARTIFACTS / namespace).glob("*.log"))
    assert logs, "no process logs: the suite started no Rafale process"
    text = {p.name: p.read_text(errors="replace") for p in logs}
    # The audit means something only if DEBUG lines from the libraries were really written.
    assert any(" DEBUG " in t and "openai" in t for t in text.values()), "no DEBUG openai lines"
    assert any(" DEBUG " in t and "aiormq" in t for t in text.values()), "no DEBUG aiormq lines"
    leaks = [(name, secret) for name, t in text.items() for secret in SECRETS if secret in t]
    assert not leaks, f"secrets in logs: {leaks}"
