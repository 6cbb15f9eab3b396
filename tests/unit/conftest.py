"""Settings for unit tests, built from keyword arguments only: never from the machine's
environment or a `.env` file, so a developer's own keys cannot change an answer."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import AliasChoices

from app.settings import Settings

SettingsFactory = Callable[..., Settings]


def _env_names() -> set[str]:
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        names.add(name.upper())
        if isinstance(field.validation_alias, AliasChoices):
            names.update(str(choice).upper() for choice in field.validation_alias.choices)
    return names


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every variable Settings would read (RAFALE_*, provider keys, ENDPOINTS__*): the
    unit tier never depends on the shell it runs in."""
    names = _env_names()
    for var in list(os.environ):
        if var.upper() in names or var.upper().startswith("ENDPOINTS__"):
            monkeypatch.delenv(var)


@pytest.fixture
def make_settings(clean_env: None) -> SettingsFactory:
    def make(**kwargs: Any) -> Settings:
        return Settings(_env_file=None, **kwargs)

    return make
