"""Failed logins slow a user name from an address down; a scan slows the address down."""

from __future__ import annotations

from appliance.backoff import LoginBackoff, LoginSlots


def test_a_few_failures_are_free_then_the_wait_doubles_up_to_a_cap() -> None:
    b = LoginBackoff(free=3, first_delay_s=1.0, max_delay_s=8.0)
    for _ in range(3):
        b.failed("10.0.0.1", "agent", 100.0)
    assert b.wait("10.0.0.1", "agent", 100.0) == 0.0
    waits = []
    for _ in range(6):
        b.failed("10.0.0.1", "agent", 100.0)
        waits.append(b.wait("10.0.0.1", "agent", 100.0))
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert b.wait("10.0.0.1", "agent", 105.0) == 3.0
    assert b.wait("10.0.0.2", "agent", 100.0) == 0.0  # other addresses are not affected


def test_other_users_of_the_same_address_do_not_wait() -> None:
    b = LoginBackoff(free=2)
    for _ in range(10):  # one agent with an expired token, retrying
        b.failed("10.0.0.1", "ci-bot", 0.0)
    assert b.wait("10.0.0.1", "ci-bot", 0.0) > 0
    assert b.wait("10.0.0.1", "agent", 0.0) == 0.0
    assert b.address_wait("10.0.0.1", 0.0) == 0.0  # one name is not a scan


def test_failures_for_many_names_make_the_whole_address_wait() -> None:
    b = LoginBackoff(free=5, first_delay_s=1.0)
    assert b.scan_free == 10  # max(10, 2 * free)
    for i in range(10):
        b.failed("10.0.0.1", f"user{i}", 0.0)
    assert b.address_wait("10.0.0.1", 0.0) == 0.0
    b.failed("10.0.0.1", "user10", 0.0)
    assert b.address_wait("10.0.0.1", 0.0) == 1.0
    assert b.address_wait("10.0.0.2", 0.0) == 0.0
    # clients that never name a user count like new names (a slow or silent login)
    for _ in range(11):
        b.failed("10.0.0.3", None, 0.0)
    assert b.address_wait("10.0.0.3", 0.0) > 0


def test_success_and_time_forget() -> None:
    b = LoginBackoff(free=1, window_s=60.0)
    b.failed("a", "agent", 0.0)
    b.failed("a", "agent", 0.0)
    assert b.wait("a", "agent", 0.0) > 0
    b.succeeded("a", "agent", 0.0)
    assert b.wait("a", "agent", 0.0) == 0.0
    b.failed("b", "agent", 0.0)
    b.failed("b", "agent", 100.0)  # the first failure is outside the window: it starts over
    assert b.wait("b", "agent", 100.0) == 0.0


def test_a_success_does_not_clear_a_scan() -> None:
    b = LoginBackoff(free=1, scan_free=2, window_s=60.0)
    for name in ("a", "b", "c"):
        b.failed("10.0.0.1", name, 0.0)
    b.succeeded("10.0.0.1", "agent", 0.0)  # a valid account does not launder a scan
    assert b.address_wait("10.0.0.1", 0.0) > 0
    assert b.address_wait("10.0.0.1", 61.0) == 0.0  # the wait ends
    b.failed("10.0.0.1", "d", 200.0)  # and the window forgets the names
    assert b.address_wait("10.0.0.1", 200.0) == 0.0


def test_a_name_known_from_the_address_is_not_held_up_by_its_scan() -> None:
    """Agents behind one NAT: one of them failing for many names made the address wait,
    and with it agents that had logged in from it all along."""
    b = LoginBackoff(free=1, scan_free=2, window_s=60.0, known_s=3600.0)
    b.succeeded("10.0.0.1", "ci-bot", 0.0)
    for name in ("a", "b", "c"):
        b.failed("10.0.0.1", name, 10.0)
    assert b.address_wait("10.0.0.1", 10.0) > 0
    assert b.known("10.0.0.1", "ci-bot", 10.0)  # the shell lets it log in
    assert not b.known("10.0.0.1", "a", 10.0)  # a failing name is not known
    assert not b.known("10.0.0.2", "ci-bot", 10.0)  # known per address
    assert not b.known("10.0.0.1", "ci-bot", 3601.0)  # for a while
    small = LoginBackoff(max_addresses=4)
    for i in range(20):
        small.succeeded("10.0.0.1", f"user{i}", float(i))
    assert len(small._known) <= 4 and small.known("10.0.0.1", "user19", 19.0)


def test_a_repeated_name_is_not_counted_again_toward_a_scan() -> None:
    b = LoginBackoff(free=100, scan_free=2)
    for _ in range(50):
        b.failed("10.0.0.1", "agent", 0.0)
        b.failed("10.0.0.1", "dba", 0.0)
    assert b.address_wait("10.0.0.1", 0.0) == 0.0


def test_the_tables_stay_bounded() -> None:
    b = LoginBackoff(max_addresses=10, window_s=1.0, scan_free=1000)
    for i in range(100):
        b.failed(f"10.0.0.{i}", "agent", float(i))
        b.failed("10.0.0.200", f"user{i}", float(i))
    assert len(b._by_address) <= 10 and len(b._by_user) <= 10
    for record in b._by_address.values():
        assert len(record.names) <= 1001


def test_only_the_first_refusal_of_each_block_is_recorded() -> None:
    b = LoginBackoff(free=1, first_delay_s=10.0, scan_free=1)
    assert not b.first_refusal("10.0.0.1", "agent")  # not blocked
    b.failed("10.0.0.1", "agent", 0.0)
    b.failed("10.0.0.1", "agent", 1.0)  # blocked until 11
    assert b.first_refusal("10.0.0.1", "agent")
    assert not b.first_refusal("10.0.0.1", "agent")
    b.failed("10.0.0.1", "agent", 12.0)  # a new block, until 32
    assert b.first_refusal("10.0.0.1", "agent")
    assert not b.first_refusal("10.0.0.1", "agent")
    assert not b.first_refusal("10.0.0.1")  # the address itself is not blocked ...
    b.failed("10.0.0.1", "dba", 13.0)  # ... until a second name fails
    assert b.first_refusal("10.0.0.1")
    assert not b.first_refusal("10.0.0.1")


def test_an_ipv6_client_counts_by_its_64_network() -> None:
    """One host holds a whole /64 and may take a new address for every guess: the
    failures of 2001:db8::1, ::2, ... counted apart, so none of them ever waited."""
    b = LoginBackoff(free=3, first_delay_s=1.0)
    for i in range(1, 5):
        b.failed(f"2001:db8::{i:x}", "admin", 0.0)
    assert b.wait("2001:db8::ffff", "admin", 0.0) == 1.0
    assert b.wait("2001:db8:0:1::1", "admin", 0.0) == 0.0  # another /64
    for i in range(11):  # a scan from addresses of one /64
        b.failed(f"2001:db8:0:2::{i + 1:x}", f"user{i}", 0.0)
    assert b.address_wait("2001:db8:0:2::abcd", 0.0) > 0
    # IPv4 counts per address, IPv4-mapped IPv6 too
    for _ in range(4):
        b.failed("::ffff:10.0.0.9", "admin", 0.0)
    assert b.wait("10.0.0.9", "admin", 0.0) == 1.0
    assert b.wait("10.0.0.10", "admin", 0.0) == 0.0
    b.succeeded("2001:db8::77", "admin", 0.0)  # a success from the /64 clears it
    assert b.wait("2001:db8::1", "admin", 0.0) == 0.0


def test_logins_in_progress_are_bounded_per_address_and_the_rest_wait_in_turn() -> None:
    slots: LoginSlots[str] = LoginSlots(2)
    assert slots.take("10.0.0.1", "a") and slots.take("10.0.0.1", "b")
    assert not slots.take("10.0.0.1", "c") and not slots.take("10.0.0.1", "d")
    assert not slots.take("10.0.0.1", "e")
    assert slots.take("10.0.0.2", "other")  # another address does not wait
    assert (slots.in_progress("10.0.0.1"), slots.waiting("10.0.0.1")) == (2, 3)
    slots.leave("10.0.0.1", "d")  # its connection ended while it waited
    assert slots.release("10.0.0.1") == "c"  # the slot passes on, first come first
    assert slots.release("10.0.0.1") == "e"
    assert slots.in_progress("10.0.0.1") == 2 and slots.waiting("10.0.0.1") == 0
    assert slots.release("10.0.0.1") is None and slots.release("10.0.0.1") is None
    assert slots.in_progress("10.0.0.1") == 0
    assert slots.take("10.0.0.1", "f")


def test_logins_in_progress_of_an_ipv6_host_count_by_its_64() -> None:
    slots: LoginSlots[str] = LoginSlots(1)
    assert slots.take("2001:db8::1", "a")
    assert not slots.take("2001:db8::2", "b")  # a new address of the same /64
    assert slots.take("2001:db8:0:1::1", "c")


def test_an_address_with_16_waiting_per_slot_is_crowded() -> None:
    from appliance.backoff import WAITING_PER_SLOT

    slots: LoginSlots[str] = LoginSlots(2)
    assert slots.take("10.0.0.1", "a") and slots.take("10.0.0.1", "b")
    for i in range(2 * WAITING_PER_SLOT - 1):
        assert not slots.take("10.0.0.1", f"w{i}")
    assert not slots.crowded("10.0.0.1")
    assert not slots.take("10.0.0.1", "last")
    assert slots.crowded("10.0.0.1") and not slots.crowded("10.0.0.2")
    slots.leave("10.0.0.1", "last")
    assert not slots.crowded("10.0.0.1")
