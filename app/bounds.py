"""The bounds on every request parameter that costs something (tokens, choices, the length of
a name that is logged, hashed and sent on), in one place: every route and every batch line
checks the same numbers, so no path is a way around another's limit.

The pydantic types serve the HTTP bodies (FastAPI then answers 400 naming the parameter);
`chat_problems` / `translate_problems` serve batch lines, which are plain JSON checked off the
request path (workers/batch/plan.py)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

MODEL_NAME_MAX = 200  # characters of a `provider/model` name
MAX_TOKENS = 1_000_000  # max_tokens / max_completion_tokens
MAX_CHOICES = 128  # `n`, as OpenAI
TRANSLATE_MAX_TEXTS = 50  # texts in one translate request, as DeepL

ModelName = Annotated[str, Field(min_length=1, max_length=MODEL_NAME_MAX)]
MaxTokens = Annotated[int, Field(ge=1, le=MAX_TOKENS)]
Choices = Annotated[int, Field(ge=1, le=MAX_CHOICES)]
TranslateTexts = Annotated[list[str], Field(min_length=1, max_length=TRANSLATE_MAX_TEXTS)]

Problem = tuple[str, str]  # (param, message)


def _count(body: dict[str, Any], name: str, top: int) -> Problem | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        return name, f"'{name}' must be an integer."
    if not 1 <= value <= top:
        return name, f"'{name}' must be between 1 and {top}."
    return None


def model_problem(model: str) -> str | None:
    """What is wrong with a model name's length, or None."""
    if len(model) > MODEL_NAME_MAX:
        return f"The model name is longer than {MODEL_NAME_MAX} characters."
    return None


def chat_problems(body: dict[str, Any]) -> list[Problem]:
    """A chat body's cost parameters out of bounds (the model's presence is checked apart)."""
    problems: list[Problem] = []
    model = body.get("model")
    if isinstance(model, str) and (msg := model_problem(model)):
        problems.append(("model", msg))
    for name, top in (("n", MAX_CHOICES), ("max_tokens", MAX_TOKENS),
                      ("max_completion_tokens", MAX_TOKENS)):
        if (problem := _count(body, name, top)) is not None:
            problems.append(problem)
    return problems


def translate_problems(body: dict[str, Any]) -> list[Problem]:
    """A translate body's `text` list over the bound (its shape is checked apart)."""
    text = body.get("text")
    if isinstance(text, list) and len(text) > TRANSLATE_MAX_TEXTS:
        return [("text", f"'text' holds {len(text)} texts; at most {TRANSLATE_MAX_TEXTS}.")]
    return []
