"""Resolve `provider/model` names to a configured adapter."""

from __future__ import annotations

import logging

from app.errors import InvalidRequest, ModelNotFound
from app.providers.base import Provider
from app.providers.mock import MockProvider
from app.providers.openai_compat import OpenAICompatProvider
from app.settings import Settings

log = logging.getLogger(__name__)

# Provider name -> the setting that configures it (for "not configured" errors).
KNOWN = {"openai": "OPENAI_API_KEY", "deepseek": "DEEPSEEK_API_KEY", "mock": ""}


class Registry:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._providers: dict[str, Provider] = {}
        self.default_model = settings.resolved_default_model

    def configured(self) -> list[str]:
        s = self.settings
        names = [n for n, key in (("openai", s.openai_api_key), ("deepseek", s.deepseek_api_key))
                 if key]
        return [*names, "mock"]

    def _build(self, name: str) -> Provider:
        s = self.settings
        read = max(s.provider_first_byte_timeout, s.provider_idle_timeout) + 1
        if name == "mock":
            return MockProvider(s.mock_tokens, s.mock_delay, s.mock_crash_enabled)
        key, url = {
            "openai": (s.openai_api_key, s.openai_base_url),
            "deepseek": (s.deepseek_api_key, s.deepseek_base_url),
        }[name]
        return OpenAICompatProvider(
            name, api_key=key, base_url=url,
            connect_timeout=s.provider_connect_timeout, read_timeout=read,
        )

    def split(self, model: str | None) -> tuple[str, str]:
        """`provider/model` -> (provider, model); bare names go to the default provider.
        Raises before anything is queued, so a bad name never reaches a worker."""
        model = model or self.default_model
        prefix, sep, rest = model.partition("/")
        if not sep or prefix not in KNOWN:
            default_provider = self.default_model.partition("/")[0]
            prefix, rest = default_provider, model
        if not rest:
            raise ModelNotFound(f"The model `{model}` does not exist", param="model")
        if prefix not in self.configured():
            raise InvalidRequest(
                f"provider `{prefix}` is not configured: set {KNOWN[prefix]}", param="model",
                code="provider_not_configured",
            )
        if prefix == "mock" and rest not in MockProvider.models:
            raise ModelNotFound(f"The model `{model}` does not exist", param="model")
        return prefix, rest

    def models(self) -> list[tuple[str, str]]:
        """(model id, owner) for every model this deployment routes by name; any other name
        of a configured provider is passed to it as is."""
        s = self.settings
        listed = {"openai": s.openai_models, "deepseek": s.deepseek_models,
                  "mock": ",".join(MockProvider.models[:1])}
        return [(f"{p}/{m.strip()}", p) for p in self.configured()
                for m in listed[p].split(",") if m.strip()]

    def get(self, name: str) -> Provider:
        provider = self._providers.get(name)
        if provider is None:
            provider = self._providers[name] = self._build(name)
        return provider

    async def aclose(self) -> None:
        for p in self._providers.values():
            await p.aclose()
        self._providers.clear()
