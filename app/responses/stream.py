"""A session's events (chunk / reset / done / error) as OpenAI's typed Responses events.

The translation is a pure function of the session's events in order, so any API process that
reads the session from its start numbers every event alike: `sequence_number` is stable, and
`GET /v1/responses/{id}?stream=true&starting_after=N` on another process continues exactly
after N.

A worker redelivery (`reset`) restarts the answer, but text a client was sent cannot be taken
back. The translator therefore streams the difference between what the current attempt has
produced and what was already sent: the new attempt's text that repeats what was sent is not
sent again, and only its continuation goes out. If the new attempt says something else than
what was sent (a sampled model rarely repeats itself), the stream ends with
`response.failed` (`worker_lost`) rather than show the client a spliced answer; the stored
response is the new attempt's whole answer, written by the worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app import events
from app.responses.output import (
    Final,
    OutputBuilder,
    Piece,
    item_status,
    render,
    response_object,
    text_part,
)

Event = dict[str, Any]


class Diverged(Exception):
    """The redelivered attempt's answer differs from what the client was already sent."""


class Translator:
    def __init__(self, base: dict[str, Any], *, live: bool = True) -> None:
        self.base = base
        self.rid: str = base["id"]
        # False for a reader that sends nothing until the end (a non-streamed response): a
        # reset then simply starts the output again.
        self.live = live
        # What `response.created` says: a background response was queued, others started.
        self.first_status = "queued" if base.get("background") else "in_progress"
        self.seq = 0
        self.sent: list[Piece] = []  # what has been sent, item by item
        self.closed = 0  # items whose `done` events were sent
        self.fresh = OutputBuilder(self.rid)  # the current attempt's answer
        self.final: dict[str, Any] | None = None  # the terminal event's response object

    def _ev(self, kind: str, **fields: Any) -> Event:
        ev = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return ev

    def start(self) -> list[Event]:
        return [self._ev("response.created",
                         response=response_object(self.base, self.first_status, [])),
                self._ev("response.in_progress",
                         response=response_object(self.base, "in_progress", []))]

    def feed(self, ev: events.Event) -> list[Event]:
        """The Responses events one session event makes (none once the response ended)."""
        if self.final is not None:
            return []
        if ev["type"] == "chunk":
            if ev.get("index", 0):
                return []  # the Responses API has one answer per response
            self.fresh.add(ev.get("content"), ev.get("reasoning"), ev.get("tool_calls"))
            return self._guarded(self._sync)
        if ev["type"] == "reset":
            self.fresh.reset()
            if not self.live:
                self.sent, self.closed = [], 0
            return []
        if ev["type"] == "done":
            done = ev
            return self._guarded(lambda out: self._finish(Final.of_done(done), out))
        if ev["type"] == "error":
            return self._fail(Final.of_error(ev))
        return []

    def _guarded(self, step: Callable[[list[Event]], None]) -> list[Event]:
        """`step` appends the events it makes to the list it is given."""
        out: list[Event] = []
        try:
            step(out)
        except Diverged:
            out.extend(self._fail(Final("failed", error={
                "code": "worker_lost", "message": "the worker serving this response was lost "
                "and its retry answered differently; retry the request"})))
        return out

    # --- keeping what was sent in step with the current attempt

    def _sync(self, out: list[Event]) -> None:
        pieces = self.fresh.pieces
        for place, piece in enumerate(pieces):
            if place >= len(self.sent):
                self._close_up_to(place, out)
                self._open(place, piece, out)
            old = self.sent[place]
            if (old.kind, old.call_id) != (piece.kind, piece.call_id):
                raise Diverged
            old.name = old.name or piece.name
            if piece.text.startswith(old.text):
                extra = piece.text[len(old.text):]
                if extra:
                    if place < self.closed:
                        raise Diverged
                    old.text = piece.text
                    out.append(self._delta(place, old, extra))
            elif not old.text.startswith(piece.text) or place < len(pieces) - 1:
                raise Diverged  # different text, or a later item began before this caught up

    def _close_up_to(self, place: int, out: list[Event]) -> None:
        """Close every item before `place`: each must be what the current attempt says."""
        for p in range(self.closed, place):
            fresh = self.fresh.pieces[p] if p < len(self.fresh.pieces) else None
            if fresh is None or fresh.text != self.sent[p].text:
                raise Diverged
            out.extend(self._close(p, self.sent[p]))
        self.closed = max(self.closed, place)

    def _open(self, place: int, piece: Piece, out: list[Event]) -> None:
        started = Piece(piece.kind, "", piece.call_id, piece.name, piece.tool_index)
        self.sent.append(started)
        item = render(self.rid, place, started, "in_progress")
        if piece.kind == "reasoning":
            item["content"] = []
        out.append(self._ev("response.output_item.added", output_index=place, item=item))
        if piece.kind == "message":
            out.append(self._ev("response.content_part.added", item_id=item["id"],
                                output_index=place, content_index=0, part=text_part("")))

    def _delta(self, place: int, piece: Piece, delta: str) -> Event:
        iid = render(self.rid, place, piece, "in_progress")["id"]
        if piece.kind == "message":
            return self._ev("response.output_text.delta", item_id=iid, output_index=place,
                            content_index=0, delta=delta, logprobs=[])
        if piece.kind == "reasoning":
            return self._ev("response.reasoning_text.delta", item_id=iid, output_index=place,
                            content_index=0, delta=delta)
        return self._ev("response.function_call_arguments.delta", item_id=iid,
                        output_index=place, delta=delta)

    def _close(self, place: int, piece: Piece) -> list[Event]:
        item = render(self.rid, place, piece, "completed")
        iid, out = item["id"], []
        if piece.kind == "message":
            out.append(self._ev("response.output_text.done", item_id=iid, output_index=place,
                                content_index=0, text=piece.text, logprobs=[]))
            out.append(self._ev("response.content_part.done", item_id=iid, output_index=place,
                                content_index=0, part=text_part(piece.text)))
        elif piece.kind == "reasoning":
            out.append(self._ev("response.reasoning_text.done", item_id=iid,
                                output_index=place, content_index=0, text=piece.text))
        else:
            out.append(self._ev("response.function_call_arguments.done", item_id=iid,
                                output_index=place, name=piece.name, arguments=piece.text))
        out.append(self._ev("response.output_item.done", output_index=place, item=item))
        return out

    # --- the end

    def _finish(self, final: Final, out: list[Event]) -> None:
        self._sync(out)
        if len(self.fresh.pieces) != len(self.sent):
            raise Diverged  # the new attempt ended before it caught up
        self._close_up_to(len(self.sent), out)
        output = [render(self.rid, p, piece, item_status(final.status, p, len(self.sent)))
                  for p, piece in enumerate(self.sent)]
        self.final = response_object(self.base, final.status, output, final)
        kind = "response.incomplete" if final.status == "incomplete" else "response.completed"
        out.append(self._ev(kind, response=self.final))

    def _fail(self, final: Final) -> list[Event]:
        output = [render(self.rid, p, piece, "incomplete") for p, piece in enumerate(self.sent)]
        self.final = response_object(self.base, "failed", output, final)
        return [self._ev("response.failed", response=self.final)]
