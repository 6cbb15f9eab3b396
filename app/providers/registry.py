"""Resolve `provider/model` names to a configured adapter."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from app.errors import InvalidRequest, ModelNotFound
from app.providers.base import Embedder, Provider
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
    embeddings: bool = True  # whether it has `/embeddings` (DeepSeek and DeepL do not)
    responses: bool = False  # it speaks the Responses API (ENDPOINTS__<NAME>__RESPONSES)


def _names(csv: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in csv.split(",") if m.strip())


def specs(s: Settings) -> dict[str, Spec]:
    out = {
        "openai": Spec("openai", "openai", s.openai_base_url, s.openai_api_key,
                       _names(s.openai_models), "" if s.openai_api_key else "OPENAI_API_KEY"),
        "deepseek": Spec("deepseek", "openai", s.deepseek_base_url, s.deepseek_api_key,
                         _names(s.deepseek_models),
                         "" if s.deepseek_api_key else "DEEPSEEK_API_KEY", embeddings=False),
        "deepl": Spec("deepl", "deepl", base_url_for(s.deepl_api_key, s.deepl_base_url),
                      s.deepl_api_key, _names(s.deepl_languages),
                      "" if s.deepl_api_key else "DEEPL_API_KEY", embeddings=False),
        # `crash` is fault injection: never listed.
        "mock": Spec("mock", "mock", models=("echo", "embed")),
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

    def embedding_model(self, model: str) -> tuple[str, str]:
        """`split` for an embeddings request: a provider without embeddings (DeepSeek,
        DeepL) or a mock model other than `embed` is a 400, before anything is queued."""
        asked = self.specs.get(model.partition("/")[0])
        # Before `split`: DeepL's model names are languages, and an unconfigured provider
        # would be reported as such, when no key would ever make it embed.
        if asked is not None and not asked.embeddings:
            raise InvalidRequest(f"The model `{model}` does not support embeddings: "
                                 f"{asked.name} has no embeddings endpoint", param="model",
                                 code="model_not_supported")
        name, rest = self.split(model)
        if not self.specs[name].embeddings:
            raise InvalidRequest(f"The model `{model}` does not support embeddings: {name} "
                                 "has no embeddings endpoint", param="model",
                                 code="model_not_supported")
        if self.specs[name].kind == "mock" and rest != "embed":
            raise InvalidRequest(f"The model `{model}` does not support embeddings: use "
                                 "mock/embed", param="model", code="model_not_supported")
        return name, rest

    def completion_model(self, model: str) -> tuple[str, str]:
        """`split` for a legacy completion (`/v1/completions`): DeepL and the mock's
        embedding model have none (a 400 before anything is queued)."""
        asked = self.specs.get(model.partition("/")[0])
        if asked is not None and asked.kind == "deepl":  # before `split`, as for embeddings
            raise InvalidRequest(f"The model `{model}` does not support completions",
                                 param="model", code="model_not_supported")
        name, rest = self.split(model)
        spec = self.specs[name]
        if spec.kind == "deepl" or (spec.kind == "mock" and rest == "embed"):
            raise InvalidRequest(f"The model `{model}` does not support completions",
                                 param="model", code="model_not_supported")
        return name, rest

    def embedder(self, model: str) -> tuple[str, str, Embedder]:
        """(provider, model, adapter) for an embeddings request (see `embedding_model`)."""
        name, rest = self.embedding_model(model)
        provider = self.get(name)
        assert isinstance(provider, MockProvider | OpenAICompatProvider)
        return name, rest, provider

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
