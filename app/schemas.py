"""Wire messages from API to workers (Task, BatchTask) and the shared request models (the
routes' bodies, which batch lines are checked against too). Session events (worker → client)
are in app/events.py.

Everything on the broker is JSON with a `schema_version`; nothing is pickled."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from app.bounds import (
    EMBED_MAX_CHARS,
    EMBED_MAX_INPUTS,
    EMBED_MAX_TOKEN_IDS,
    MAX_CHOICES,
    TOKEN_ID_MAX,
    Choices,
    Dimensions,
    MaxTokens,
    ModelName,
    TranslateTexts,
)
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
    # A stored conversation (/v1/conversations): its history goes first, and the turn is
    # added to it once the answer is done.
    conversation_id: str | None = Field(None, min_length=1, max_length=64)

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
    # A legacy completion's prompts (`/v1/completions`); None for a chat.
    prompt: list[str] | None = None
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
    # Rafale's own (the SDK's `extra_body`): as ChatRequest's; never sent to the provider.
    conversation_id: str | None = Field(None, min_length=1, max_length=64)

    def to_body(self) -> ChatBody:
        extra = provider_extra(self.model_dump(exclude_none=True))
        return ChatBody(
            messages=[m.model_dump(exclude_none=True) for m in self.messages],
            temperature=self.temperature,
            # OpenAI's newer limit wins when both are given.
            max_tokens=self.max_completion_tokens or self.max_tokens,
            extra=extra,
        )


class TextCompletionRequest(BaseModel):
    """Body of the legacy `POST /v1/completions`: prompts in, text out."""

    model_config = ConfigDict(extra="allow")

    model: ModelName
    prompt: str | list[str]
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: MaxTokens | None = None
    n: Choices | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    echo: bool = False

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompts(cls, value: Any) -> str | list[str]:
        if isinstance(value, str):
            return value
        if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
            # Token-array prompts (OpenAI takes them) are not passed on: say so.
            raise PydanticCustomError("prompt_type", "it must be a string or a list of strings")
        if not value or len(value) > MAX_CHOICES:
            raise ValueError(f"give 1 to {MAX_CHOICES} prompts")
        return value

    @field_validator("n")
    @classmethod
    def _choices(cls, n: int | None, info: ValidationInfo) -> int | None:
        prompt = info.data.get("prompt")
        count = len(prompt) if isinstance(prompt, list) else 1
        if n is not None and count * n > MAX_CHOICES:
            raise ValueError(f"{count} prompts times n={n} is over {MAX_CHOICES} choices")
        return n

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, echo: bool) -> bool:
        if echo:
            raise ValueError("not supported: Rafale returns the completion only")
        return echo

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else self.prompt

    def to_body(self) -> ChatBody:
        own = {"model", "prompt", "stream", "stream_options", "temperature", "max_tokens",
               "echo"}
        extra = {k: v for k, v in self.model_dump(exclude_none=True).items() if k not in own}
        return ChatBody(messages=[{"role": "user", "content": p} for p in self.prompts],
                        temperature=self.temperature, max_tokens=self.max_tokens, extra=extra,
                        prompt=self.prompts)


class TranslateRequest(BaseModel):
    """Body of `POST /v1/translate`, and of every line of a translate batch."""

    # DeepL's other fields (context, tag_handling, glossary_id, ...) pass through as they are.
    model_config = ConfigDict(extra="allow")

    text: TranslateTexts
    target_lang: str = Field(min_length=2, max_length=7)
    source_lang: str | None = Field(None, min_length=2, max_length=7)
    formality: str | None = Field(
        None, pattern=r"^(default|more|less|prefer_more|prefer_less)$")


# An embeddings request's inputs, one kind per request: texts, or token-id arrays.
EmbedInputs = list[str] | list[list[int]]
_INPUT_SHAPES = ("it must be a string, a list of strings, a list of token ids (integers) "
                 "or a list of lists of token ids")


def _is_token(value: Any) -> bool:
    return type(value) is int and 0 <= value <= TOKEN_ID_MAX


def _token_ids(value: list[Any], where: str) -> list[int]:
    if not value:
        raise ValueError(f"{where} is an empty token array")
    if len(value) > EMBED_MAX_TOKEN_IDS:
        raise ValueError(f"{where} has {len(value)} token ids; the limit is "
                         f"{EMBED_MAX_TOKEN_IDS}")
    if not all(_is_token(t) for t in value):
        raise PydanticCustomError("embedding_input_type", "{where} must hold token ids: "
                                  "integers from 0 to {top}", {"where": where, "top": TOKEN_ID_MAX})
    return value


def _text(value: str, where: str) -> str:
    if not value:
        raise ValueError(f"{where} is an empty string (a model cannot embed nothing)")
    if len(value) > EMBED_MAX_CHARS:
        raise ValueError(f"{where} has {len(value)} characters; the limit is {EMBED_MAX_CHARS}")
    return value


def embedding_inputs(value: Any) -> EmbedInputs:
    """`input` as OpenAI takes it, as a list of texts or of token arrays, each bounded
    (app/bounds.py); ValueError / PydanticCustomError with a message a person can act on."""
    if isinstance(value, str):
        return [_text(value, "it")]
    if not isinstance(value, list):
        raise PydanticCustomError("embedding_input_type", _INPUT_SHAPES)
    if not value:
        raise ValueError("it is an empty list")
    if all(_is_token(t) for t in value):
        return [_token_ids(value, "it")]
    if len(value) > EMBED_MAX_INPUTS:
        raise ValueError(f"it has {len(value)} items; the limit is {EMBED_MAX_INPUTS}")
    if all(isinstance(t, str) for t in value):
        return [_text(t, f"item {i}") for i, t in enumerate(value)]
    if all(isinstance(t, list) for t in value):
        return [_token_ids(t, f"item {i}") for i, t in enumerate(value)]
    raise PydanticCustomError("embedding_input_type", _INPUT_SHAPES)


class EmbedBody(BaseModel):
    """The provider-facing part of an embeddings task."""

    inputs: EmbedInputs
    dimensions: int | None = None
    user: str | None = None
    # Other parameters (vLLM's `truncate_prompt_tokens`, ...) passed to the provider.
    extra: dict[str, Any] = Field(default_factory=dict)


_EMBED_OWN = frozenset({"model", "input", "encoding_format", "dimensions", "user"})


class EmbeddingRequest(BaseModel):
    """Body of `POST /v1/embeddings`, and of every line of an embeddings batch."""

    model_config = ConfigDict(extra="allow")

    model: ModelName
    input: EmbedInputs
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Dimensions | None = None
    user: str | None = Field(None, max_length=256)

    @field_validator("input", mode="before")
    @classmethod
    def _inputs(cls, value: Any) -> EmbedInputs:
        return embedding_inputs(value)

    def to_body(self) -> EmbedBody:
        extra = {k: v for k, v in (self.model_extra or {}).items()
                 if k not in _EMBED_OWN and v is not None}
        return EmbedBody(inputs=self.input, dimensions=self.dimensions, user=self.user,
                         extra=extra)


RequestModel = TypeVar("RequestModel", bound=BaseModel)


def validated(model: type[RequestModel], body: dict[str, Any]) -> RequestModel:
    """`body` read as its route reads it, or the same 400 (InvalidRequest) the route answers:
    a batch line is checked by exactly the code that checks a live request."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise describe_validation(exc.errors()) from None


class TaskConversation(BaseModel):
    """The stored conversation a chat task continues: the worker adds `add` (the request's
    new messages, `{"role", "content"}`) and the answer to it once the answer is done."""

    id: str
    add: list[dict[str, str]]


class ResponseJob(BaseModel):
    """A chat task that answers a stored Responses API response: its worker records the
    response's progress and writes its final output (workers/responses.py)."""

    id: str
    # Made even when nobody reads its session (until cancelled): the store is its reader.
    background: bool = False


class TaskBase(BaseModel):
    """What every task on a lane carries, whatever it asks the provider for."""

    schema_version: int = SCHEMA_VERSION
    task_id: str
    owner: str = ""
    model: str
    reply_to: str  # the session queue
    deadline: float  # epoch seconds; past it nobody waits for the answer
    created: float = 0.0  # epoch seconds at enqueue, for the queue-wait metric
    request_id: str = ""
    # Tokens admission reserved for this task (KEY_TPM); its usage record settles them.
    reserved_tokens: int = 0


class Task(TaskBase):
    """API → worker, on the owner's task lane (`llm_tasks.<n>`): a chat."""

    kind: Literal["chat"] = "chat"
    body: ChatBody
    conversation: TaskConversation | None = None
    response: ResponseJob | None = None  # set when the chat answers a stored response


class EmbedTask(TaskBase):
    """API → worker, on the owner's task lane: embeddings, answered like a non-streamed chat
    (chunk events carrying the vectors, then `done`)."""

    kind: Literal["embed"] = "embed"
    body: EmbedBody


AnyTask = Task | EmbedTask
_ANY_TASK: TypeAdapter[AnyTask] = TypeAdapter(
    Annotated[Task | EmbedTask, Field(discriminator="kind")])


def parse_task(raw: bytes | str) -> AnyTask:
    """A task off a lane, by its `kind`; ValidationError when it is none of them."""
    return _ANY_TASK.validate_json(raw)


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
