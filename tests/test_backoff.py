"""Failed logins slow an address down; a success forgets it."""

from __future__ import annotations

from appliance.backoff import LoginBackoff


def test_a_few_failures_are_free_then_the_wait_doubles_up_to_a_cap() -> None:
    b = LoginBackoff(free=3, first_delay_s=1.0, max_delay_s=8.0)
    for _ in range(3):
        b.failed("10.0.0.1", 100.0)
    assert b.wait("10.0.0.1", 100.0) == 0.0
    waits = []
    for _ in range(6):
        b.failed("10.0.0.1", 100.0)
        waits.append(b.wait("10.0.0.1", 100.0))
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert b.wait("10.0.0.1", 105.0) == 3.0
    assert b.wait("10.0.0.2", 100.0) == 0.0  # other addresses are not affected


def test_success_and_time_forget() -> None:
    b = LoginBackoff(free=1, window_s=60.0)
    b.failed("a", 0.0)
    b.failed("a", 0.0)
    assert b.wait("a", 0.0) > 0
    b.succeeded("a")
    assert b.wait("a", 0.0) == 0.0
    b.failed("b", 0.0)
    b.failed("b", 100.0)  # the first failure is outside the window: it starts over
    assert b.wait("b", 100.0) == 0.0


def test_the_table_stays_bounded() -> None:
    b = LoginBackoff(max_addresses=10, window_s=1.0)
    for i in range(100):
        b.failed(f"10.0.0.{i}", float(i))
    assert len(b._by_address) <= 10


def test_only_the_first_refusal_of_each_block_is_recorded() -> None:
    b = LoginBackoff(free=1, first_delay_s=10.0)
    assert not b.first_refusal("10.0.0.1")  # not blocked
    b.failed("10.0.0.1", 0.0)
    b.failed("10.0.0.1", 1.0)  # blocked until 11
    assert b.first_refusal("10.0.0.1")
    assert not b.first_refusal("10.0.0.1")
    b.failed("10.0.0.1", 12.0)  # a new block, until 32
    assert b.first_refusal("10.0.0.1")
    assert not b.first_refusal("10.0.0.1")
