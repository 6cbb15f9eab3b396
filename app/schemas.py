"""Wire messages from API to workers (Task, BatchTask) and the shared chat request model.
Session events (worker → client) are in app/events.py.

Everything on the broker is JSON with a `schema_version`; nothing is pickled."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from app.bounds import MaxTokens, ModelName

# The error type of a model that needs one of several fields: app/api/errors.py reports it as
# OpenAI's `missing_required_parameter`, not as an invalid value.
MISSING_ONE_OF = "missing_one_of"

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
