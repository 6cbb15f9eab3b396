"""Which task a worker's death is charged to (workers/isolation.py), read from headers."""

from __future__ import annotations

from workers.isolation import ATTEMPTS, CRASHES, Delivery


def test_a_first_delivery_is_attempt_one_and_charged_nothing() -> None:
    d = Delivery.of({"x-delivery-count": 0})
    assert (d.attempt, d.crashes, d.suspect()) == (1, 0, False)
    assert Delivery.of(None) == d


def test_one_death_in_a_crowd_proves_nothing_two_make_a_suspect() -> None:
    assert not Delivery.of({"x-delivery-count": 1}).suspect()
    assert Delivery.of({"x-delivery-count": 2}).suspect()


def test_a_moved_copy_starts_uncharged_and_numbers_its_attempts_on() -> None:
    lane = Delivery.of({"x-delivery-count": 2})
    moved = Delivery.of({**lane.moved(), "x-delivery-count": 0})
    assert moved.crashes == 0
    assert moved.attempt == lane.attempt + 1  # event ids keep increasing across copies


def test_a_copy_given_back_keeps_its_charges_and_adds_none() -> None:
    # Killed once alone, then drained by a SIGTERM: the drain is not a death.
    d = Delivery.of({"x-delivery-count": 1, ATTEMPTS: 3})
    back = Delivery.of({**d.handed_back(), "x-delivery-count": 0})
    assert (back.crashes, back.attempt) == (1, d.attempt + 1)


def test_the_parked_notice_comes_after_every_attempt_of_the_task() -> None:
    d = Delivery.of({ATTEMPTS: 3, CRASHES: 1})
    last_possible = d.earlier_attempts + 3  # three deliveries alone at most
    assert d.parked_attempt(3) > last_possible


def test_unreadable_headers_count_as_absent() -> None:
    assert Delivery.of({ATTEMPTS: "x", CRASHES: None, "x-delivery-count": -4}) == Delivery(0, 0, 0)
