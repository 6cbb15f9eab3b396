"""A `/v1/responses` batch line: its body read exactly as the live route reads it, what a
batch cannot do refused with the same 400 shape, and the response object its batch output
line carries, built as the live non-streamed route builds it (app/responses/stream.py's
`Translator(live=False)` over the same answer).

A line is a response nobody stores: there is no stored response to continue
(`previous_response_id`), no conversation to add a turn to (lines run at once, in no order),
no background and no stream (the output file is the answer). `store` is ignored: the object
says `store: false`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from app import events
from app.errors import InvalidRequest
from app.responses.items import normalized, to_messages
from app.responses.output import Final, OutputBuilder, base_object, response_object
from app.responses.request import ResponseRequest
from app.schemas import ChatBody, validated

# Parameter -> why a batch line cannot have it (each a 400 naming the parameter).
REFUSED = {
    "background": "a batch runs its lines in the background already",
    "stream": "the batch's output file is the answer",
    "previous_response_id": "a batch line's response is not stored, and lines run in no "
                            "set order",
    "conversation": "each line runs on its own, in no set order",
}


def _refuse(param: str) -> InvalidRequest:
    return InvalidRequest(f"'{param}' is not supported in a batch: {REFUSED[param]}",
                          param=param, code="unsupported_parameter")


@dataclass(slots=True)
class ResponseLine:
    """A line ready to run: its request, the chat completion it asks, and the request to
    pass as it is to a server that speaks the Responses API (`passed`)."""

    request: ResponseRequest
    chat: ChatBody
    messages: list[dict[str, Any]]  # the input as chat messages, without instructions

    @property
    def model(self) -> str:
        return self.request.model

    def passed(self) -> dict[str, Any]:
        return self.request.passed(self.messages)


def line_request(body: dict[str, Any]) -> ResponseLine:
    """The line's body as the live route reads it (and its 400s), then the batch's own
    refusals; InvalidRequest is the 400 its error-file line carries."""
    request = validated(ResponseRequest, body)
    if request.background:
        raise _refuse("background")
    if request.stream:
        raise _refuse("stream")
    if request.previous_response_id is not None:
        raise _refuse("previous_response_id")
    if request.conversation is not None:
        raise _refuse("conversation")
    request.store = False  # nothing is stored per line
    request.check()
    messages = to_messages(normalized(request.input_items()))
    return ResponseLine(request, request.chat_body(messages), messages)


def line_object(rid: str, line: ResponseLine, output: OutputBuilder,
                done: events.DoneEvent, created_at: int | None = None) -> dict[str, Any]:
    """The response object of a line whose chat answer ended with `done`: output items and
    usage in the Responses API's words (`output` was fed the answer's first choice)."""
    base = base_object(rid, int(time.time()) if created_at is None else created_at,
                       line.model, line.request.echoed())
    final = Final.of_done(done)
    return response_object(base, final.status, output.items(final.status), final)
