"""`POST /v1/responses`: the body, and its translation onto a chat completion.

What Rafale does not translate (built-in tools, images by file id, item references) is a 400
that names it. Options it does not act on (`reasoning`, `include`, `truncation`, ...) are
ignored, as the README's *Responses* says."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.bounds import MaxTokens, ModelName
from app.errors import InvalidRequest
from app.responses.items import from_messages
from app.schemas import ChatBody

MAX_INPUT_ITEMS = 2048  # items in one `input` (the body's byte limit bounds their size)
MAX_TOOLS = 128  # as OpenAI


class FunctionTool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(None, max_length=64)
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: TextFormat | None = None


class ResponseRequest(BaseModel):
    """Body of `POST /v1/responses`."""

    model_config = ConfigDict(extra="ignore")

    model: ModelName
    input: str | list[dict[str, Any]] = Field(min_length=1)
    instructions: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_output_tokens: MaxTokens | None = None
    tools: list[FunctionTool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    metadata: dict[str, str] | None = Field(None, max_length=16)
    store: bool = True
    previous_response_id: str | None = Field(None, max_length=64)
    conversation: str | dict[str, Any] | None = None
    stream: bool = False
    background: bool = False
    user: str | None = Field(None, max_length=256)

    @field_validator("input")
    @classmethod
    def _input_items(cls, value: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
        # Items are bounded, a string's characters only by the body limit (a max_length on
        # the union would count those too).
        if isinstance(value, list) and len(value) > MAX_INPUT_ITEMS:
            raise ValueError(f"input has at most {MAX_INPUT_ITEMS} items")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata_bounds(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for k, v in (value or {}).items():
            if len(k) > 64 or len(v) > 512:
                raise ValueError("metadata keys are at most 64 characters, values 512")
        return value

    def check(self) -> None:
        """What the schema alone cannot say."""
        if self.conversation is not None:
            self.conversation_id()  # its shape
            if self.previous_response_id is not None:
                raise InvalidRequest("Cannot use both 'previous_response_id' and "
                                     "'conversation'", param="conversation",
                                     code="invalid_value")
            if not self.store:
                raise InvalidRequest("a response in a conversation is stored: 'store' cannot "
                                     "be false with 'conversation'", param="store",
                                     code="invalid_value")
        if self.background and not self.store:
            raise InvalidRequest("background mode needs store=true (the result is kept to be "
                                 "retrieved)", param="background", code="invalid_value")
        if self.previous_response_id is not None \
                and not self.previous_response_id.startswith("resp_"):
            raise InvalidRequest("previous_response_id is not a response id",
                                 param="previous_response_id", code="invalid_value")

    def conversation_id(self) -> str | None:
        """`conversation` as OpenAI takes it: an id, or an object with one."""
        conv = self.conversation
        cid = conv.get("id") if isinstance(conv, dict) else conv
        if conv is not None and (not isinstance(cid, str) or not cid or len(cid) > 64):
            raise InvalidRequest("conversation is a conversation id or {\"id\": ...}",
                                 param="conversation", code="invalid_value")
        return cid

    def echoed(self) -> dict[str, Any]:
        """What the response object echoes of its request (see output.base_object)."""
        params = self.model_dump(include={"instructions", "max_output_tokens", "metadata",
                                          "parallel_tool_calls", "previous_response_id",
                                          "store", "background", "temperature", "top_p",
                                          "tool_choice", "user"}, exclude_none=True)
        params["conversation"] = self.conversation_id()
        if self.tools:
            params["tools"] = [t.model_dump(exclude_none=True) for t in self.tools]
        if self.text is not None:
            params["text"] = self.text.model_dump(by_alias=True, exclude_none=True)
        return params

    def chat_body(self, messages: list[dict[str, Any]]) -> ChatBody:
        """The chat completion this response asks: `instructions` first, then `messages`
        (the history and this input); raises 400 for what cannot be translated."""
        return ChatBody(messages=([{"role": "system", "content": self.instructions}]
                                  if self.instructions else []) + messages,
                        temperature=self.temperature, max_tokens=self.max_output_tokens,
                        extra=self.chat_extra())

    def passed(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The request for a server that speaks the Responses API: as the client sent it,
        with every earlier turn in `input` (the server keeps no state of Rafale's
        responses)."""
        passed = self.model_dump(include={"instructions", "temperature", "top_p",
                                          "max_output_tokens", "tool_choice",
                                          "parallel_tool_calls"}, exclude_none=True)
        if self.tools:
            passed["tools"] = [t.model_dump(exclude_none=True) for t in self.tools]
        if self.text is not None:
            passed["text"] = self.text.model_dump(by_alias=True, exclude_none=True)
        return {**passed, "input": from_messages(messages)}

    def input_items(self) -> list[dict[str, Any]]:
        """`input` as a list of items (a string is one user message)."""
        if isinstance(self.input, str):
            return [{"type": "message", "role": "user", "content": self.input}]
        return list(self.input)

    def chat_extra(self) -> dict[str, Any]:
        """The chat-completion parameters besides messages, temperature and max tokens."""
        extra: dict[str, Any] = {}
        if self.tools:
            extra["tools"] = [{"type": "function", "function": t.model_dump(
                exclude={"type"}, exclude_none=True)} for t in self.tools]
        if self.tool_choice is not None:
            extra["tool_choice"] = _tool_choice(self.tool_choice)
        if self.parallel_tool_calls is not None and self.tools:
            extra["parallel_tool_calls"] = self.parallel_tool_calls
        if self.top_p is not None:
            extra["top_p"] = self.top_p
        fmt = self.text.format if self.text else None
        if fmt is not None and fmt.type == "json_object":
            extra["response_format"] = {"type": "json_object"}
        elif fmt is not None and fmt.type == "json_schema":
            if not fmt.name or fmt.schema_ is None:
                raise InvalidRequest("text.format json_schema needs a name and a schema",
                                     param="text.format", code="missing_required_parameter")
            spec = {"name": fmt.name, "schema": fmt.schema_, "description": fmt.description,
                    "strict": fmt.strict}
            extra["response_format"] = {"type": "json_schema", "json_schema": {
                k: v for k, v in spec.items() if v is not None}}
        if self.user:
            extra["user"] = self.user
        return extra


def _tool_choice(choice: str | dict[str, Any]) -> Any:
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise InvalidRequest("tool_choice is auto, none, required or a function",
                                 param="tool_choice", code="invalid_value")
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise InvalidRequest("tool_choice: only function tools are supported", param="tool_choice",
                         code="invalid_value")
