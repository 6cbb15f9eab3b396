"""Resolve `provider/model` names to a configured adapter."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from app.errors import InvalidRequest, ModelNotFound
from app.providers.base import Provider
from app.providers.deepl import DeepLProvider, base_url_for, check_language
from app.providers.mock import MockProvider
from app.providers.openai_compat import OpenAICompatProvider
from app.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Spec:
    """One routable provider as configured by the settings."""

    name: str
    kind: str  # the adapter: openai (any OpenAI-compatible server) | deepl | mock
    base_url: str = ""
    api_key: str = ""
    models: tuple[str, ...] = ()  # what GET /v1/models lists; other names still route
    missing: str = ""  # the setting that would configure it; empty when configured
    responses: bool = False  # it speaks the Responses API (ENDPOINTS__<NAME>__RESPONSES)


def _names(csv: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in csv.split(",") if m.strip())


def specs(s: Settings) -> dict[str, Spec]:
    out = {
        "openai": Spec("openai", "openai", s.openai_base_url, s.openai_api_key,
                       _names(s.openai_models), "" if s.openai_api_key else "OPENAI_API_KEY"),
        "deepseek": Spec("deepseek", "openai", s.deepseek_base_url, s.deepseek_api_key,
                         _names(s.deepseek_models),
                         "" if s.deepseek_api_key else "DEEPSEEK_API_KEY"),
        "deepl": Spec("deepl", "deepl", base_url_for(s.deepl_api_key, s.deepl_base_url),
                      s.deepl_api_key, _names(s.deepl_languages),
                      "" if s.deepl_api_key else "DEEPL_API_KEY"),
        "mock": Spec("mock", "mock", models=MockProvider.models[:1]),
    }
    for name, ep in s.endpoints.items():
        out[name] = Spec(name, "openai", ep.base_url, ep.api_key, _names(ep.models),
                         responses=ep.responses)
    return out


class Registry:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.specs = specs(settings)
        self._providers: dict[str, Provider] = {}
        self.default_model = settings.resolved_default_model

    def configured(self) -> list[str]:
        return [name for name, spec in self.specs.items() if not spec.missing]

    def _build(self, spec: Spec) -> Provider:
        s = self.settings
        read = max(s.provider_first_byte_timeout, s.provider_idle_timeout) + 1
        if spec.kind == "mock":
            return MockProvider(s.mock_tokens, s.mock_delay, s.mock_crash_enabled)
        if spec.kind == "deepl":
            return DeepLProvider(spec.api_key, spec.base_url, s.provider_connect_timeout, read)
        return OpenAICompatProvider(
            spec.name, api_key=spec.api_key, base_url=spec.base_url,
            connect_timeout=s.provider_connect_timeout, read_timeout=read,
        )

    def split(self, model: str | None) -> tuple[str, str]:
        """`provider/model` -> (provider, model); bare names go to the default provider.
        Raises before anything is queued, so a bad name never reaches a worker."""
        model = model or self.default_model
        prefix, sep, rest = model.partition("/")
        if not sep or prefix not in self.specs:
            # A bare name, or one with a slash of its own (`meta-llama/Llama-3`).
            prefix, rest = self.default_model.partition("/")[0], model
        if not rest:
            raise ModelNotFound(f"The model `{model}` does not exist", param="model")
        spec = self.specs[prefix]
        if spec.missing:
            raise InvalidRequest(
                f"provider `{prefix}` is not configured: set {spec.missing}", param="model",
                code="provider_not_configured",
            )
        if spec.kind == "mock" and rest not in MockProvider.models:
            raise ModelNotFound(f"The model `{model}` does not exist", param="model")
        if spec.kind == "deepl":
            rest = check_language(rest, "model")
        return prefix, rest

    def models(self) -> list[tuple[str, str]]:
        """(model id, owner) for every model this deployment lists."""
        return [(f"{name}/{m}", name) for name in self.configured()
                for m in self.specs[name].models]

    def speaks_responses(self, model: str) -> bool:
        """Whether `model`'s provider takes Responses API requests as they are."""
        return self.specs[self.split(model)[0]].responses

    def get(self, name: str) -> Provider:
        provider = self._providers.get(name)
        if provider is None:
            provider = self._providers[name] = self._build(self.specs[name])
        return provider

    async def aclose(self) -> None:
        for p in self._providers.values():
            await p.aclose()
        self._providers.clear()
