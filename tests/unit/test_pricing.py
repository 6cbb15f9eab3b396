"""Prices: the built-in table, MODEL_PRICES_FILE over it, `provider/*`, and bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.pricing import BUILTIN, Price, PriceTable, load_prices, parse_prices
from app.settings import describe_error
from tests.unit.conftest import SettingsFactory


def test_the_builtin_table_prices_every_model_rafale_lists(
        make_settings: SettingsFactory) -> None:
    s = make_settings()
    table = load_prices("")
    listed = [f"openai/{m}" for m in s.openai_models.split(",")] + [
        f"deepseek/{m}" for m in s.deepseek_models.split(",")]
    for model in listed:
        price = table.price(model)
        assert price is not None and price.input > 0 and price.output > 0, model


def test_mock_and_deepl_cost_nothing_by_default() -> None:
    table = load_prices("")
    assert table.cost_nano("mock/echo", 1000, 1000) == 0
    assert table.cost_nano("deepl/DE", 5000, 0) == 0


def test_cost_is_whole_nano_dollars_of_both_directions() -> None:
    table = PriceTable({"openai/gpt-4o-mini": Price(0.15, 0.60)})
    # 1000 x 0.15 / 1M USD + 500 x 0.60 / 1M USD = 0.00015 + 0.0003 USD
    assert table.cost_nano("openai/gpt-4o-mini", 1000, 500) == 450_000


def test_an_exact_entry_wins_over_its_providers_wildcard() -> None:
    table = PriceTable({"vllm/*": Price(1, 1), "vllm/big": Price(10, 20)})
    assert table.price("vllm/big") == Price(10, 20)
    assert table.price("vllm/small") == Price(1, 1)
    assert table.cost_nano("vllm/small", 1_000_000, 0) == 1_000_000_000


def test_a_model_without_a_price_costs_nothing() -> None:
    table = load_prices("")
    assert table.price("openai/some-new-model") is None
    assert table.cost_nano("openai/some-new-model", 10**6, 10**6) == 0
    assert table.price("no-provider-prefix") is None


def test_the_file_adds_to_and_overrides_the_builtin_table(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"openai/gpt-4o": {"input": 1, "output": 2},
                                "deepl/*": {"input": 25, "output": 0},
                                "vllm/*": {"input": 0.5, "output": 0.5}}))
    table = load_prices(str(path))
    assert table.price("openai/gpt-4o") == Price(1.0, 2.0)
    assert table.price("openai/gpt-4o-mini") == BUILTIN["openai/gpt-4o-mini"]
    assert table.cost_nano("deepl/FR", 1_000_000, 0) == 25 * 10**9  # characters, for DeepL
    assert table.price("vllm/anything") == Price(0.5, 0.5)


@pytest.mark.parametrize("text", [
    "{not json",
    "[]",
    '{"gpt-4o": {"input": 1, "output": 1}}',
    '{"*/gpt-4o": {"input": 1, "output": 1}}',
    '{"openai/": {"input": 1, "output": 1}}',
    '{"openai/x": {"input": 1}}',
    '{"openai/x": {"input": 1, "output": 1, "cached": 1}}',
    '{"openai/x": {"input": -1, "output": 1}}',
    '{"openai/x": {"input": "1", "output": 1}}',
    '{"openai/x": {"input": true, "output": 1}}',
    '{"openai/x": [1, 2]}',
    '{"openai/x": {"input": 1e308, "output": 1}}',
])
def test_a_bad_file_is_refused_naming_the_setting(text: str) -> None:
    with pytest.raises(ValueError, match="MODEL_PRICES_FILE"):
        parse_prices(text)


def test_an_unreadable_file_names_the_setting_and_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ValueError, match=r"MODEL_PRICES_FILE: cannot read .*nope\.json"):
        load_prices(str(missing))


def test_settings_with_a_bad_prices_file_fail_at_start(make_settings: SettingsFactory,
                                                       tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text('{"openai/gpt-4o": {"input": -3, "output": 1}}')
    with pytest.raises(ValidationError) as info:
        make_settings(model_prices_file=str(path))
    assert "MODEL_PRICES_FILE" in describe_error(info.value)
    path.write_text('{"openai/gpt-4o": {"input": 3, "output": 1}}')
    assert make_settings(model_prices_file=str(path)).model_prices_file == str(path)
