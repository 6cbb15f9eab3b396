"""Model names to providers: `provider/model`, bare names, unknown names, named endpoints."""

from __future__ import annotations

import pytest

from app.errors import InvalidRequest, ModelNotFound
from app.providers.deepl import FREE_URL, PRO_URL
from app.providers.registry import Registry, specs
from tests.unit.conftest import SettingsFactory

VLLM = {"vllm": {"base_url": "http://vllm:8000/v1", "models": "llama-3, qwen ,"}}


def test_provider_prefix_routes_to_that_provider(make_settings: SettingsFactory) -> None:
    r = Registry(make_settings(openai_api_key="sk-test"))
    assert r.split("openai/gpt-4o") == ("openai", "gpt-4o")
    assert r.split("mock/echo") == ("mock", "echo")


def test_bare_name_goes_to_the_default_provider(make_settings: SettingsFactory) -> None:
    r = Registry(make_settings(openai_api_key="sk-test"))
    assert r.default_model == "openai/gpt-4o-mini"
    assert r.split("gpt-4.1") == ("openai", "gpt-4.1")


def test_a_name_with_a_slash_of_its_own_goes_whole_to_the_default_provider(
        make_settings: SettingsFactory) -> None:
    r = Registry(make_settings(endpoints=VLLM, default_model="vllm/llama-3"))
    assert r.split("meta-llama/Llama-3-8B") == ("vllm", "meta-llama/Llama-3-8B")


def test_no_model_means_the_default_model(make_settings: SettingsFactory) -> None:
    r = Registry(make_settings())
    assert r.split(None) == ("mock", "echo")
    assert r.split("") == ("mock", "echo")


def test_unknown_bare_name_on_the_mock_default_is_model_not_found(
        make_settings: SettingsFactory) -> None:
    r = Registry(make_settings())
    with pytest.raises(ModelNotFound) as info:
        r.split("gpt-4o")
    assert (info.value.code, info.value.param, info.value.status) == (
        "model_not_found", "model", 404)
    assert "`gpt-4o`" in info.value.message


def test_unknown_mock_model_is_model_not_found(make_settings: SettingsFactory) -> None:
    with pytest.raises(ModelNotFound):
        Registry(make_settings()).split("mock/nope")


def test_provider_prefix_with_nothing_after_it_is_model_not_found(
        make_settings: SettingsFactory) -> None:
    r = Registry(make_settings(openai_api_key="sk-test"))
    with pytest.raises(ModelNotFound, match="`openai/`"):
        r.split("openai/")


def test_unconfigured_provider_names_the_setting_to_set(make_settings: SettingsFactory) -> None:
    r = Registry(make_settings())
    for model, setting in [("openai/gpt-4o", "OPENAI_API_KEY"),
                           ("deepseek/deepseek-chat", "DEEPSEEK_API_KEY"),
                           ("deepl/DE", "DEEPL_API_KEY")]:
        with pytest.raises(InvalidRequest) as info:
            r.split(model)
        assert info.value.code == "provider_not_configured"
        assert info.value.status == 400 and info.value.param == "model"
        assert setting in info.value.message


def test_named_endpoint_routes_its_prefix(make_settings: SettingsFactory) -> None:
    r = Registry(make_settings(endpoints=VLLM))
    assert r.split("vllm/anything-it-serves") == ("vllm", "anything-it-serves")
    assert "vllm" in r.configured()


def test_deepl_model_is_the_target_language_upper_cased(make_settings: SettingsFactory) -> None:
    r = Registry(make_settings(deepl_api_key="k:fx"))
    assert r.split("deepl/en-gb") == ("deepl", "EN-GB")
    with pytest.raises(ModelNotFound):
        r.split("deepl/english")


def test_configured_lists_only_providers_with_their_setting(
        make_settings: SettingsFactory) -> None:
    assert Registry(make_settings()).configured() == ["mock"]
    assert Registry(make_settings(deepseek_api_key="ds")).configured() == ["deepseek", "mock"]


def test_models_lists_each_configured_providers_models_with_its_owner(
        make_settings: SettingsFactory) -> None:
    r = Registry(make_settings(endpoints=VLLM, openai_api_key="sk", openai_models="a, b"))
    assert r.models() == [("openai/a", "openai"), ("openai/b", "openai"),
                          ("mock/echo", "mock"), ("mock/embed", "mock"), ("vllm/llama-3", "vllm"),
                          ("vllm/qwen", "vllm")]


def test_mock_lists_echo_and_embed_but_not_crash(make_settings: SettingsFactory) -> None:
    assert Registry(make_settings()).models() == [("mock/echo", "mock"), ("mock/embed", "mock")]


def test_specs_carry_keys_and_urls_from_the_settings(make_settings: SettingsFactory) -> None:
    s = specs(make_settings(deepseek_api_key="ds-key", deepseek_base_url="http://ds/v1",
                            endpoints={"ollama": {"base_url": "http://o/v1", "api_key": "ok"}}))
    assert (s["deepseek"].base_url, s["deepseek"].api_key, s["deepseek"].missing) == (
        "http://ds/v1", "ds-key", "")
    assert (s["ollama"].kind, s["ollama"].api_key, s["ollama"].models) == ("openai", "ok", ())
    assert s["openai"].missing == "OPENAI_API_KEY"


def test_deepl_host_follows_the_key_unless_overridden(make_settings: SettingsFactory) -> None:
    assert specs(make_settings(deepl_api_key="k:fx"))["deepl"].base_url == FREE_URL
    assert specs(make_settings(deepl_api_key="k"))["deepl"].base_url == PRO_URL
    assert specs(make_settings(deepl_api_key="k", deepl_base_url="http://fake/"))[
        "deepl"].base_url == "http://fake"
