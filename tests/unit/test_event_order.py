"""Events back in publish order after a reader let go (app/event_order.py)."""

from __future__ import annotations

from app.event_order import InOrder, Position, Resume


def feed(order: InOrder[Position], *arrivals: Position) -> list[Position]:
    out: list[Position] = []
    for pos in arrivals:
        out += [item for _, item in order.push(pos, pos)]
    return out


def test_in_order_arrivals_go_straight_through() -> None:
    assert feed(InOrder(), (1, 0), (1, 1), (1, 2)) == [(1, 0), (1, 1), (1, 2)]


def test_events_handed_back_late_are_put_before_the_newer_ones() -> None:
    # The previous reader's events return to the queue after newer ones reached us.
    order: InOrder[Position] = InOrder()
    assert feed(order, (1, 3), (1, 4)) == []
    assert order.waiting
    assert feed(order, (1, 0), (1, 1), (1, 2)) == [(1, 0), (1, 1), (1, 2), (1, 3), (1, 4)]
    assert not order.waiting


def test_each_event_goes_once_even_when_delivered_again() -> None:
    # A channel restored gives every event again, from the first.
    order: InOrder[Position] = InOrder()
    assert feed(order, (1, 0), (1, 1)) == [(1, 0), (1, 1)]
    assert feed(order, (1, 0), (1, 1), (1, 2)) == [(1, 2)]


def test_a_new_attempt_starts_at_its_reset_and_drops_the_lost_one() -> None:
    order: InOrder[Position] = InOrder()
    assert feed(order, (1, 0), (2, 1)) == [(1, 0)]  # attempt 2 waits for its reset
    assert feed(order, (2, 0)) == [(2, 0), (2, 1)]
    assert feed(order, (1, 1), (1, 2)) == []  # the reset told the client to discard these
    assert not order.waiting


def test_a_reader_may_start_at_a_later_attempt() -> None:
    # The first attempt's events were lost with a broker restart (transient events).
    assert feed(InOrder(), (3, 0), (3, 1)) == [(3, 0), (3, 1)]


def resumed(after: Position | None, *arrivals: Position, done: Position | None = None
            ) -> Resume[Position]:
    resume: Resume[Position] = Resume(after, lambda pos: pos == done)
    for pos in arrivals:
        resume.push(pos, pos)
    return resume


def test_resuming_skips_what_the_client_had() -> None:
    r = resumed((1, 1), (1, 0), (1, 1), (1, 2), (1, 3))
    assert r.found and not r.has_all
    assert list(r.ready) == [(1, 2), (1, 3)]


def test_a_client_past_the_terminal_event_has_it_all() -> None:
    for after in ((1, 2), (1, 9), (4, 0)):
        r = resumed(after, (1, 0), (1, 1), (1, 2), done=(1, 2))
        assert r.has_all and not r.ready, after


def test_an_id_not_reached_yet_is_not_found() -> None:
    r = resumed((1, 7), (1, 0), (1, 1))
    assert not r.found and not r.has_all and not r.ready


def test_resuming_in_a_replaced_attempt_goes_on_from_its_reset() -> None:
    r = resumed((1, 5), (2, 0), (2, 1))  # the first attempt's events are gone
    assert r.found and list(r.ready) == [(2, 0), (2, 1)]
