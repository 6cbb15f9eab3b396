"""Settings: parsing (endpoints, provider caps, API keys), validation, derived values."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import Endpoint, describe_error, main
from tests.unit.conftest import SettingsFactory

KEY_A, KEY_B = "alice-key-0123456789", "bob-key-0123456789ab"


def error_of(make: SettingsFactory, **kwargs: object) -> str:
    with pytest.raises(ValidationError) as info:
        make(**kwargs)
    return describe_error(info.value)


def test_defaults_need_no_environment(make_settings: SettingsFactory) -> None:
    s = make_settings()
    assert (s.rafale_namespace, s.session_ttl, s.endpoints) == ("rafale", 300.0, {})
    assert s.rabbitmq_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert s.provider_caps() == {}


def test_namespaced_prefixes_a_broker_name_with_the_namespace(
        make_settings: SettingsFactory) -> None:
    s = make_settings(rafale_namespace="wt-a.1")
    assert s.namespaced("llm_tasks") == "wt-a.1.llm_tasks"
    assert s.namespaced("heartbeat") == "wt-a.1.heartbeat"


@pytest.mark.parametrize("namespace", ["", "has space", "a/b", "x" * 65])
def test_a_namespace_outside_the_allowed_characters_is_refused(
        make_settings: SettingsFactory, namespace: str) -> None:
    assert "RAFALE_NAMESPACE" in error_of(make_settings, rafale_namespace=namespace)


def test_endpoints_are_read_from_nested_env_names(make_settings: SettingsFactory,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENDPOINTS__VLLM__BASE_URL", "http://vllm:8000/v1")
    monkeypatch.setenv("ENDPOINTS__VLLM__MODELS", "llama-3,qwen")
    monkeypatch.setenv("ENDPOINTS__LM-STUDIO__BASE_URL", "https://lm/v1")
    monkeypatch.setenv("ENDPOINTS__LM-STUDIO__API_KEY", "secret-key")
    s = make_settings()
    assert s.endpoints == {
        "vllm": Endpoint(base_url="http://vllm:8000/v1", models="llama-3,qwen"),
        "lm-studio": Endpoint(base_url="https://lm/v1", api_key="secret-key"),
    }
    assert "secret-key" not in repr(s.endpoints)


def test_other_settings_are_read_from_the_environment(make_settings: SettingsFactory,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAFALE_NAMESPACE", "from-env")
    monkeypatch.setenv("RABBIT_MQ", "amqps://u:p@broker:5671/")
    monkeypatch.setenv("session_ttl", "60")
    s = make_settings()
    assert (s.rafale_namespace, s.rabbitmq_url, s.session_ttl) == (
        "from-env", "amqps://u:p@broker:5671/", 60.0)


def test_an_endpoint_needs_an_http_url(make_settings: SettingsFactory) -> None:
    assert "BASE_URL" in error_of(make_settings, endpoints={"x": {"base_url": "ftp://x"}})
    assert "BASE_URL" in error_of(make_settings, endpoints={"x": {"models": "a"}})


@pytest.mark.parametrize("name", ["mock", "openai", "deepseek", "deepl", "-x", "a.b", "A",
                                  "x" * 33])
def test_an_endpoint_name_must_be_new_and_well_formed(make_settings: SettingsFactory,
                                                      name: str) -> None:
    msg = error_of(make_settings, endpoints={name: {"base_url": "http://h/v1"}})
    assert f"ENDPOINTS__{name.upper()}" in msg


@pytest.mark.parametrize(("raw", "caps"), [
    ("", {}), ("openai=16", {"openai": 16}),
    (" openai = 16 , deepl=4 ,", {"openai": 16, "deepl": 4}),
    ("vllm=1,vllm=2", {"vllm": 2}), (" , ", {}),
])
def test_provider_caps_parse_provider_equals_n(make_settings: SettingsFactory, raw: str,
                                               caps: dict[str, int]) -> None:
    assert make_settings(provider_concurrency=raw).provider_caps() == caps


@pytest.mark.parametrize("raw", ["openai", "openai=0", "openai=-1", "=3", "openai=x",
                                 "openai=1.5", "openai=3,deepl"])
def test_a_bad_provider_cap_fails_at_start(make_settings: SettingsFactory, raw: str) -> None:
    assert "PROVIDER_CONCURRENCY" in error_of(make_settings, provider_concurrency=raw)


def test_api_keys_are_checked_at_start_without_echoing_them(
        make_settings: SettingsFactory) -> None:
    make_settings(rafale_api_keys=f"alice:{KEY_A},bob:{KEY_B}")
    msg = error_of(make_settings, rafale_api_keys=f"alice:{KEY_A},bob:short")
    assert "RAFALE_API_KEYS" in msg and "short" not in msg


def test_an_api_keys_file_is_read_and_checked(make_settings: SettingsFactory,
                                              tmp_path: Path) -> None:
    good, bad = tmp_path / "keys", tmp_path / "bad"
    good.write_text(f"# one a line\nalice:{KEY_A}\n")
    bad.write_text("alice\n")
    make_settings(rafale_api_keys_file=str(good))
    assert "RAFALE_API_KEYS_FILE" in error_of(make_settings, rafale_api_keys_file=str(bad))
    missing = error_of(make_settings, rafale_api_keys_file=str(tmp_path / "nope"))
    assert "RAFALE_API_KEYS_FILE: cannot read" in missing


@pytest.mark.parametrize(("field", "value"), [
    ("session_ttl", 1800), ("session_ttl", 0), ("provider_total_timeout", 1800),
    ("port", 0), ("port", 65536), ("task_max_deliveries", 0), ("stream_flush_interval", 2),
    ("log_format", "xml"), ("log_level", "verbose"), ("publish_timeout", 0),
])
def test_out_of_range_values_are_refused_and_named(make_settings: SettingsFactory,
                                                   field: str, value: object) -> None:
    assert f"invalid setting {field.upper()}:" in error_of(make_settings, **{field: value})


def test_the_largest_session_ttl_under_the_consumer_timeout_is_accepted(
        make_settings: SettingsFactory) -> None:
    assert make_settings(session_ttl=1799.5).session_ttl == 1799.5


def test_log_level_is_case_insensitive(make_settings: SettingsFactory) -> None:
    assert make_settings(log_level="debug").log_level == "debug"


def test_the_broker_url_must_be_amqp(make_settings: SettingsFactory) -> None:
    assert "RABBITMQ_URL" in error_of(make_settings, rabbitmq_url="http://rabbit:15672/")


@pytest.mark.parametrize(("kwargs", "model"), [
    ({}, "mock/echo"),
    ({"deepseek_api_key": "ds"}, "deepseek/deepseek-chat"),
    ({"deepseek_api_key": "ds", "openai_api_key": "sk"}, "openai/gpt-4o-mini"),
    ({"endpoints": {"vllm": {"base_url": "http://v/v1", "models": " llama , qwen"}}},
     "vllm/llama"),
    ({"endpoints": {"vllm": {"base_url": "http://v/v1"}}}, "mock/echo"),
    ({"openai_api_key": "sk", "default_model": "mock/echo"}, "mock/echo"),
])
def test_the_default_model_follows_the_configured_providers(
        make_settings: SettingsFactory, kwargs: dict[str, object], model: str) -> None:
    assert make_settings(**kwargs).resolved_default_model == model


@pytest.mark.parametrize("model", ["gpt-4o", "vllm/llama", "openai/", "/gpt-4o", "mock"])
def test_a_default_model_without_a_known_provider_fails_at_start(
        make_settings: SettingsFactory, model: str) -> None:
    assert "DEFAULT_MODEL" in error_of(make_settings, default_model=model)


@pytest.mark.parametrize("model", ["openai/gpt-4o", "mock/echo", "vllm/meta-llama/Llama-3"])
def test_a_default_model_may_name_any_builtin_or_endpoint_provider(
        make_settings: SettingsFactory, model: str) -> None:
    s = make_settings(default_model=model, endpoints={"vllm": {"base_url": "http://v/v1"}})
    assert s.resolved_default_model == model


def test_secrets_stay_out_of_the_repr(make_settings: SettingsFactory) -> None:
    s = make_settings(openai_api_key="sk-secret", rafale_api_keys=f"alice:{KEY_A}",
                      database_url="postgresql://u:pw@h/db")
    for secret in ("sk-secret", KEY_A, "pw@h"):
        assert secret not in repr(s)


def test_describe_error_gives_one_line_per_bad_setting(make_settings: SettingsFactory) -> None:
    lines = error_of(make_settings, port=0, session_ttl=5000).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("invalid setting SESSION_TTL:")
    assert lines[1].startswith("invalid setting PORT:")


def test_describe_error_names_a_nested_setting_by_its_env_name(
        make_settings: SettingsFactory) -> None:
    msg = error_of(make_settings, endpoints={"vllm": {"base_url": "ftp://v"}})
    assert msg.startswith("invalid setting ENDPOINTS__VLLM__BASE_URL: ")


def test_main_exits_2_with_the_reason_on_a_bad_setting(
        clean_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    assert main() == 0
    monkeypatch.setenv("SESSION_TTL", "3600")
    assert main() == 2
    assert "invalid setting SESSION_TTL" in capsys.readouterr().err



def test_main_says_ok_and_shows_the_effective_values_but_no_secret(
        clean_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    for name, value in [("OPENAI_API_KEY", "sk-secret-1"), ("RAFALE_API_KEYS", f"alice:{KEY_A}"),
                        ("RABBITMQ_URL", "amqp://rafale:hunter2@mq:5672/"), ("PORT", "9000"),
                        ("ENDPOINTS__VLLM__BASE_URL", "http://vllm:8000/v1"),
                        ("ENDPOINTS__VLLM__API_KEY", "vllm-secret-2")]:
        monkeypatch.setenv(name, value)
    assert main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "configuration OK"
    for shown in ("PORT=9000", "RABBITMQ_URL=amqp://rafale:***@mq:5672/",
                  "OPENAI_API_KEY=(set)", "RAFALE_API_KEYS=(set)", "DEEPSEEK_API_KEY=",
                  "DEFAULT_MODEL=openai/gpt-4o-mini (derived)", "MOCK_CRASH_ENABLED=false",
                  "ENDPOINTS__VLLM__BASE_URL=http://vllm:8000/v1",
                  "ENDPOINTS__VLLM__API_KEY=(set)"):
        assert shown in lines, shown
    text = "\n".join(lines)
    assert not any(secret in text for secret in ("sk-secret-1", KEY_A, "hunter2",
                                                 "vllm-secret-2"))
    assert main(["worker"]) == 0 and capsys.readouterr().out == ""  # entrypoint.sh: quiet


def test_a_check_across_settings_reads_without_pydantics_prefix(
        make_settings: SettingsFactory) -> None:
    msg = error_of(make_settings, rafale_api_keys="alice:short")
    assert msg.startswith("invalid setting: RAFALE_API_KEYS: each entry must be `name:key`")
    assert "Value error" not in msg and "settings:" not in msg


def test_the_api_refuses_to_start_without_keys_unless_open_was_chosen(
        make_settings: SettingsFactory) -> None:
    refusal = make_settings().api_refusal()
    assert refusal is not None
    assert "RAFALE_API_KEYS" in refusal and "RAFALE_OPEN" in refusal
    assert make_settings(rafale_open=True).api_refusal() is None
    assert make_settings(rafale_api_keys=f"alice:{KEY_A}").api_refusal() is None


def test_admin_keys_must_name_configured_keys(make_settings: SettingsFactory) -> None:
    s = make_settings(rafale_api_keys=f"alice:{KEY_A},bob:{KEY_B}", rafale_admin_keys="alice")
    ring = s.key_ring()
    assert ring is not None and ring.admins == {"alice"}
    msg = error_of(make_settings, rafale_api_keys=f"alice:{KEY_A}", rafale_admin_keys="root")
    assert "RAFALE_ADMIN_KEYS" in msg and "root" in msg


def test_worker_metrics_listen_on_loopback_unless_told(make_settings: SettingsFactory) -> None:
    assert make_settings().worker_metrics_host == "127.0.0.1"
    assert make_settings(worker_metrics_host="0.0.0.0").worker_metrics_host == "0.0.0.0"


def test_main_checks_that_the_api_may_start_only_for_roles_that_run_it(
        clean_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    assert main(["worker"]) == 0
    assert main([]) == 0
    for role in ("api", "all"):
        assert main([role]) == 2
        err = capsys.readouterr().err
        assert "RAFALE_API_KEYS" in err and "RAFALE_OPEN" in err
    monkeypatch.setenv("RAFALE_OPEN", "true")
    assert main(["api"]) == 0


def test_the_grpc_door_needs_its_own_port_and_readable_tls_files(
        make_settings: SettingsFactory, tmp_path: Path) -> None:
    # Both listen with SO_REUSEPORT: one port would mix HTTP and gRPC connections at random.
    with pytest.raises(ValidationError, match="GRPC_PORT and PORT must differ"):
        make_settings(port=9000, grpc_port=9000)
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ValidationError, match=r"GRPC_TLS_KEY: .* is not a readable file"):
        make_settings(grpc_tls_cert=str(cert), grpc_tls_key=str(tmp_path / "missing.pem"))
    key = tmp_path / "key.pem"
    key.write_text("x")
    assert make_settings(grpc_tls_cert=str(cert), grpc_tls_key=str(key)).grpc_tls_key == str(key)
