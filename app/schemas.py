"""Wire messages from API to workers (Task, BatchTask) and the shared request models (the
routes' bodies, which batch lines are checked against too). Session events (worker → client)
are in app/events.py.

Everything on the broker is JSON with a `schema_version`; nothing is pickled."""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from app.bounds import Choices, MaxTokens, ModelName, TranslateTexts
from app.completions import provider_extra
from app.errors import MISSING_ONE_OF, describe_validation

SCHEMA_VERSION = 1

Role = Literal["system", "user", "assistant", "tool", "developer"]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Role
    content: str


class ChatRequest(BaseModel):
    """Body of `POST /chat/async` and `POST /chat`."""

    model_config = ConfigDict(extra="ignore")

    message: str | None = Field(None, min_length=1)
    messages: list[ChatMessage] | None = Field(None, min_length=1)
    model: ModelName | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: MaxTokens | None = None
    system: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ChatRequest:
        if self.message is None and self.messages is None:
            raise PydanticCustomError(
                MISSING_ONE_OF, "Missing required parameter: 'message' (a string) or "
                "'messages' (a list)", {"param": "message"})
        if self.message is not None and self.messages is not None:
            raise ValueError("give either `message` (a string) or `messages` (a list), not both")
        return self

    def to_messages(self) -> list[dict[str, str]]:
        msgs: list[dict[str, str]] = []
        if self.system:
            msgs.append({"role": "system", "content": self.system})
        if self.message is not None:
            msgs.append({"role": "user", "content": self.message})
        else:
            msgs.extend(m.model_dump() for m in self.messages or ())
        return msgs


class ChatBody(BaseModel):
    """The provider-facing part of a chat task."""

    messages: list[dict[str, Any]]
    temperature: float | None = None
    max_tokens: int | None = None
    # Other OpenAI parameters (top_p, stop, seed, response_format, ...) passed to the provider.
    extra: dict[str, Any] = Field(default_factory=dict)
    # A Responses API request passed through to a provider that speaks it (see ChatParams).
    responses: dict[str, Any] | None = None


class CompletionMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class CompletionRequest(BaseModel):
    """Body of `POST /v1/chat/completions`, and of every line of a chat batch."""

    model_config = ConfigDict(extra="allow")

    model: ModelName
    messages: list[CompletionMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None
    n: Choices | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    metadata: dict[str, str] | None = None

    def to_body(self) -> ChatBody:
        extra = provider_extra(self.model_dump(exclude_none=True))
        return ChatBody(
            messages=[m.model_dump(exclude_none=True) for m in self.messages],
            temperature=self.temperature,
            # OpenAI's newer limit wins when both are given.
            max_tokens=self.max_completion_tokens or self.max_tokens,
            extra=extra,
        )


class TranslateRequest(BaseModel):
    """Body of `POST /v1/translate`, and of every line of a translate batch."""

    # DeepL's other fields (context, tag_handling, glossary_id, ...) pass through as they are.
    model_config = ConfigDict(extra="allow")

    text: TranslateTexts
    target_lang: str = Field(min_length=2, max_length=7)
    source_lang: str | None = Field(None, min_length=2, max_length=7)
    formality: str | None = Field(
        None, pattern=r"^(default|more|less|prefer_more|prefer_less)$")


RequestModel = TypeVar("RequestModel", bound=BaseModel)


def validated(model: type[RequestModel], body: dict[str, Any]) -> RequestModel:
    """`body` read as its route reads it, or the same 400 (InvalidRequest) the route answers:
    a batch line is checked by exactly the code that checks a live request."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise describe_validation(exc.errors()) from None


class ResponseJob(BaseModel):
    """A chat task that answers a stored Responses API response: its worker records the
    response's progress and writes its final output (workers/responses.py)."""

    id: str
    # Made even when nobody reads its session (until cancelled): the store is its reader.
    background: bool = False


class Task(BaseModel):
    """API → worker, on the owner's task lane (`llm_tasks.<n>`)."""

    schema_version: int = SCHEMA_VERSION
    kind: Literal["chat"] = "chat"
    task_id: str
    owner: str = ""
    model: str
    body: ChatBody
    reply_to: str  # the session queue
    deadline: float  # epoch seconds; past it nobody waits for the answer
    created: float = 0.0  # epoch seconds at enqueue, for the queue-wait metric
    request_id: str = ""
    # Tokens admission reserved for this task (KEY_TPM); its usage record settles them.
    reserved_tokens: int = 0
    response: ResponseJob | None = None


class BatchLine(BaseModel):
    """One request of a batch, as its input line gave it."""

    line: int  # 1-based, in the input file
    custom_id: str
    body: dict[str, Any]


class BatchTask(BaseModel):
    """API/worker -> worker, on `llm_batch`: plan a batch, run a group of its lines, or write
    its result files. Each is safe to run twice (keyed by batch id and line)."""

    schema_version: int = SCHEMA_VERSION
    kind: Literal["batch_plan", "batch_items", "batch_finalize"]
    batch_id: str
    endpoint: str = ""
    lines: list[BatchLine] = Field(default_factory=list)
    created: float = 0.0
    request_id: str = ""
    # A group handed back by a worker that held it through a store outage: lines it left
    # `running` are this message's own, to take back (as on a redelivery).
    retake: bool = False
