"""The content detectors scan each value of a masked result on the event loop, where
every session waits for them: their cost must grow with a value's length, whatever an
agent puts in it (``SELECT REPEAT(CONCAT(REPEAT('a', 63), '@'), 250000)``)."""

from __future__ import annotations

import random
import resource
import subprocess
import sys
import textwrap

import pytest

from appliance.policy.masking import (
    _EMAIL,
    ROW_CANDIDATES,
    Detector,
    MaskStrategy,
    ScanBudget,
    ValueMask,
    _emails,
)

# Values an agent can make the server return; the first ones made the e-mail pattern read
# 64 bytes from every byte of the value.
ADVERSARIAL = {
    "local parts before a lone @": (b"a" * 63 + b"@") * 4,
    "local parts and labels without a dot": (b"a" * 64 + b"@" + b"b" * 63) * 4,
    "a run longer than a local part": b"a" * 200 + b"@example.com",
    "a long first label": b"x@" + b"b" * 100 + b".com",
    "a long later label": b"x@b." + b"c" * 100,
    "matches back to back": b"a@b.c" * 20,
    "a domain then a local part": b"x@a.b_c@d.e+f@g.h",
    "a trailing dot": b"ann@example.com.",
    "dashes": b"-@-.-@--.--",
}


def spans(text: bytes) -> list[tuple[int, int]]:
    return [m.span() for m in _EMAIL.finditer(text)]


@pytest.mark.parametrize("text", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_emails_are_found_where_the_pattern_finds_them(text: bytes) -> None:
    assert list(_emails(text, ScanBudget())) == spans(text)


def test_emails_are_found_where_the_pattern_finds_them_in_random_texts() -> None:
    rnd = random.Random(20261128)
    alphabet = b"aZ9._%+-@@. !"
    for _ in range(20_000):
        text = bytes(rnd.choice(alphabet) for _ in range(rnd.randint(0, 120)))
        text = text.replace(b"!", b"a" * rnd.randint(55, 75))  # runs near the limits
        assert list(_emails(text, ScanBudget())) == spans(text), text


_SCAN = textwrap.dedent(
    """
    from appliance.policy.masking import Detector, MaskStrategy, ValueMask

    mask = ValueMask("c", None, b"k" * 32, (Detector("email", MaskStrategy.REDACT),))
    value = (b"a" * 63 + b"@") * (32 * 1024 * 1024 // 64)  # 32 MiB, no address in it
    assert mask(value) == value
    value = (b"a" * 64 + b"@" + b"b" * 63) * (32 * 1024 * 1024 // 128)
    assert mask(value) == value
    print("scanned")
    """
)
CPU_SECONDS = 8  # the scan takes well under a second; the pattern as written, half a minute


def _cpu_limit() -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))


def test_a_value_built_to_make_the_email_detector_backtrack_is_scanned_in_linear_time() -> None:
    """Two 32 MiB values of local parts before an ``@`` with no domain after it: read a
    bounded number of times each, they are scanned within a CPU budget a read of 64
    bytes from every byte (about a second a megabyte) exceeds many times over."""
    done = subprocess.run(
        [sys.executable, "-c", _SCAN],
        capture_output=True,
        preexec_fn=_cpu_limit,
        check=False,
    )
    assert done.returncode == 0, (done.returncode, done.stderr.decode()[-2000:])
    assert done.stdout.strip() == b"scanned"


DETECTORS = (Detector("card", MaskStrategy.LAST4), Detector("email", MaskStrategy.REDACT))
KEY = b"k" * 32
ADDRESS = b"ann@example.com "  # one finding
CARD = b"4111-1111-1111-1111 "  # one finding


def test_a_value_of_more_candidates_than_a_row_may_hold_is_redacted_whole() -> None:
    """Each finding costs microseconds on the event loop: a value with more candidates
    than ``ROW_CANDIDATES`` comes back as ``****``, not scanned to its end."""
    mask = ValueMask("c", None, KEY, DETECTORS)
    assert mask(ADDRESS * (ROW_CANDIDATES + 1)) == b"****"
    assert mask(CARD * (ROW_CANDIDATES + 1)) == b"****"
    assert mask(b"1-" * 20 * (ROW_CANDIDATES + 1)) == b"****"  # not cards, but candidates
    fewer = mask(ADDRESS * 1000 + CARD * 1000)  # each masked on its own
    assert fewer == b"**** " * 1000 + b"***************1111 " * 1000


def test_the_candidates_are_counted_per_row_across_its_values() -> None:
    """Many values of a row, each under the limit, add up (a row of 1,000 columns of
    16 KB each held every session as long as one value of 16 MB); the next row starts
    again."""
    budget = ScanBudget()
    masks = [ValueMask(f"c{i}", None, KEY, DETECTORS, column=i, budget=budget) for i in range(3)]
    half = ADDRESS * (ROW_CANDIDATES // 2)
    row = [mask(half) for mask in masks]
    assert row[0] != b"****" and row[0] is not None and b"ann@" not in row[0]
    assert row[1] != b"****"  # exactly the limit
    assert row[2] == b"****"
    assert masks[2](b"no candidate in it") == b"no candidate in it"  # nothing to count
    assert masks[0](half) != b"****"  # column 0 again: the next row
