"""The bounds on every request parameter that costs something (tokens, choices, the length of
a name that is logged, hashed and sent on), in one place: every route and every batch line
checks the same numbers, so no path is a way around another's limit.

The pydantic types serve the request models (app/schemas.py): the routes answer 400 naming the
parameter, and a batch line is checked against the same model when it runs. `model_problem`
checks a batch's one model when the batch is validated (workers/batch/plan.py)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from app.errors import InvalidRequest

MODEL_NAME_MAX = 200  # characters of a `provider/model` name
MAX_TOKENS = 1_000_000  # max_tokens / max_completion_tokens
MAX_CHOICES = 128  # `n`, as OpenAI
TRANSLATE_MAX_TEXTS = 50  # texts in one translate request, as DeepL
EMBED_MAX_INPUTS = 2048  # inputs in one embeddings request, as OpenAI
EMBED_MAX_TOKEN_IDS = 8192  # ids in one token-array input: OpenAI's per-input token limit
# Characters of one text input: OpenAI's 8192 tokens are rarely over ~4 characters each; a
# text past this bound could never fit, and the provider refuses what is over in tokens.
EMBED_MAX_CHARS = 8192 * 8
EMBED_MAX_DIMENSIONS = 16_384  # `dimensions`: OpenAI's largest model has 3072
TOKEN_ID_MAX = 2**31 - 1
# A stored conversation or a previous_response_id chain sent as history: past ~2M tokens no
# model takes it, and every turn would carry it through the broker again.
HISTORY_MAX_CHARS = 8_000_000
HISTORY_MAX_MESSAGES = 10_000

ModelName = Annotated[str, Field(min_length=1, max_length=MODEL_NAME_MAX)]
MaxTokens = Annotated[int, Field(ge=1, le=MAX_TOKENS)]
Choices = Annotated[int, Field(ge=1, le=MAX_CHOICES)]
TranslateTexts = Annotated[list[str], Field(min_length=1, max_length=TRANSLATE_MAX_TEXTS)]
Dimensions = Annotated[int, Field(ge=1, le=EMBED_MAX_DIMENSIONS)]


def model_problem(model: str) -> str | None:
    """What is wrong with a model name's length, or None."""
    if len(model) > MODEL_NAME_MAX:
        return f"The model name is longer than {MODEL_NAME_MAX} characters."
    return None


def check_history(messages: list[dict[str, Any]], param: str) -> None:
    """A 400 naming `param` when stored history is past what any model takes."""
    chars = sum(len(str(m.get("content") or "")) + len(str(m.get("tool_calls") or ""))
                for m in messages)
    if len(messages) > HISTORY_MAX_MESSAGES or chars > HISTORY_MAX_CHARS:
        raise InvalidRequest(
            f"The history of '{param}' is too long to send ({len(messages)} messages, {chars} "
            f"characters; at most {HISTORY_MAX_MESSAGES} and {HISTORY_MAX_CHARS}): start a new "
            "one", param=param, code="context_length_exceeded")
