"""The batch control messages: their bytes on the wire, and the parser that reads them."""

from __future__ import annotations

import pytest

from app import control


def test_a_stop_message_has_the_bytes_workers_have_always_read() -> None:
    message = control.stop_message("batch_1", "cancelled")
    assert control.encode(message) == b'{"type":"stop","batch_id":"batch_1","status":"cancelled"}'
    assert control.message_id(message) == "stop.batch_1"


def test_a_cooldown_message_keeps_the_providers_seconds_as_given() -> None:
    assert control.encode(control.cooldown_message("openai", 12.5)) == (
        b'{"type":"cooldown","provider":"openai","seconds":12.5}')
    assert control.encode(control.cooldown_message("openai", 3)) == (
        b'{"type":"cooldown","provider":"openai","seconds":3}')


def test_cooldown_message_ids_are_each_new() -> None:
    message = control.cooldown_message("deepl", 5)
    first, second = control.message_id(message), control.message_id(message)
    assert first.startswith("cooldown.")
    assert first != second


@pytest.mark.parametrize("message", [
    control.stop_message("batch_1", "cancelled"),
    control.stop_message("batch_2", "expired"),
    control.cooldown_message("openai", 30.0),
])
def test_what_is_encoded_parses_back_to_the_same_message(
        message: control.ControlMessage) -> None:
    assert control.parse(control.encode(message)) == message


@pytest.mark.parametrize("body", [
    b"not json", b"[]", b'"stop"', b'{"type":"launch"}', b'{"batch_id":"b","status":"expired"}',
    b'{"type":"stop","status":"cancelled"}', b'{"type":"stop","batch_id":7,"status":"expired"}',
    b'{"type":"stop","batch_id":"b","status":"completed"}',
    b'{"type":"cooldown","seconds":5}', b'{"type":"cooldown","provider":"p"}',
    b'{"type":"cooldown","provider":"p","seconds":"5"}',
    b'{"type":"cooldown","provider":"p","seconds":true}',
])
def test_anything_else_is_not_a_control_message(body: bytes) -> None:
    assert control.parse(body) is None
