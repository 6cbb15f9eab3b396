"""What a request costs: USD per million input and output tokens, per `provider/model`.

A built-in table covers the OpenAI and DeepSeek models Rafale lists; MODEL_PRICES_FILE (JSON)
adds to it or overrides it, an entry per `provider/model` or `provider/*` (every model of that
provider the file or the table does not name):

    {"openai/gpt-4o": {"input": 2.5, "output": 10}, "vllm/*": {"input": 0, "output": 0}}

`mock/*` and `deepl/*` cost 0 unless the file says otherwise. DeepL bills characters, not
tokens: Rafale counts the characters DeepL translates as its input "tokens" (output 0), so a
DeepL price is USD per million characters.

Costs are whole nano-dollars (1e-9 USD): sums of them are exact, however many rows a report or
a budget adds up, which float dollars would not be. A model with no price costs 0."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

NANO = 1_000_000_000  # nano-dollars per dollar
# A price is per million tokens: per token, in nano-dollars, it is the price times this.
_NANO_PER_TOKEN = NANO // 1_000_000
SETTING = "MODEL_PRICES_FILE"


@dataclass(frozen=True, slots=True)
class Price:
    """USD per one million tokens."""

    input: float
    output: float


# List prices (USD per 1M tokens, standard tier) when this table was written; a deployment
# with other prices (a discount, a newer model) says so in MODEL_PRICES_FILE.
BUILTIN: dict[str, Price] = {
    "openai/gpt-4o-mini": Price(0.15, 0.60),
    "openai/gpt-4o": Price(2.50, 10.00),
    "openai/gpt-4.1-mini": Price(0.40, 1.60),
    "openai/gpt-4.1": Price(2.00, 8.00),
    "deepseek/deepseek-chat": Price(0.27, 1.10),
    "deepseek/deepseek-reasoner": Price(0.55, 2.19),
    # Embeddings bill input tokens only.
    "openai/text-embedding-3-small": Price(0.02, 0.0),
    "openai/text-embedding-3-large": Price(0.13, 0.0),
    "openai/text-embedding-ada-002": Price(0.10, 0.0),
    "mock/*": Price(0.0, 0.0),
    "deepl/*": Price(0.0, 0.0),
}


class PriceTable:
    def __init__(self, prices: dict[str, Price]) -> None:
        self.prices = dict(prices)

    def price(self, model: str) -> Price | None:
        """The price of `provider/model`: its own entry, else its provider's `provider/*`."""
        found = self.prices.get(model)
        if found is None:
            provider, sep, _ = model.partition("/")
            found = self.prices.get(f"{provider}/*") if sep else None
        return found

    def cost_nano(self, model: str, input_tokens: int, output_tokens: int) -> int:
        """What these tokens of `model` cost, in nano-dollars (0 for a model with no price)."""
        price = self.price(model)
        if price is None:
            return 0
        return round((input_tokens * price.input + output_tokens * price.output)
                     * _NANO_PER_TOKEN)


def parse_prices(text: str, source: str = SETTING) -> dict[str, Price]:
    """A prices file's entries; ValueError naming `source` and the entry when one is wrong."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f'{source}: must be a JSON object {{"provider/model": '
                         f'{{"input": <USD per 1M>, "output": <USD per 1M>}}, ...}}')
    return {_model_name(name, source): _price(name, value, source)
            for name, value in data.items()}


def _model_name(name: str, source: str) -> str:
    provider, sep, model = name.partition("/")
    if not sep or not provider or not model or provider == "*" or len(name) > 264:
        raise ValueError(f"{source}: `{name[:80]}` is not `provider/model` or `provider/*`")
    return name


def _price(name: str, value: Any, source: str) -> Price:
    if not isinstance(value, dict) or set(value) != {"input", "output"}:
        raise ValueError(f'{source}: `{name}` must be {{"input": <USD per 1M tokens>, '
                         f'"output": <USD per 1M tokens>}}')
    for field in ("input", "output"):
        amount = value[field]
        if (isinstance(amount, bool) or not isinstance(amount, int | float)
                or not math.isfinite(amount) or amount < 0 or amount > 1_000_000):
            raise ValueError(f"{source}: `{name}` {field} must be a number of USD per 1M "
                             f"tokens, 0 to 1000000")
    return Price(float(value["input"]), float(value["output"]))


def load_prices(path: str) -> PriceTable:
    """The built-in table with MODEL_PRICES_FILE's entries over it ("" : the table alone)."""
    prices = dict(BUILTIN)
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ValueError(f"{SETTING}: cannot read {path}: {exc.strerror}") from None
        prices.update(parse_prices(text))
    return PriceTable(prices)
