"""requirements/image.txt, the image's exact, hash-checked dependencies, against pyproject.

The Containerfile installs only what the lock names (``--require-hashes --no-deps``), so a
dependency added to pyproject.toml but not to the lock would be missing from the image,
and a lock left behind a raised specifier would ship a version sqlgate does not accept.
Here: every entry is an exact pin with hashes, and every requirement of pyproject.toml
(its dependencies, with markers evaluated for the image's Python, and its build system)
is pinned at a version it accepts. Their own dependencies depend on the pinned versions,
which this environment need not have installed: the image build checks those (``pip
check`` after the install from the lock, in CI's container stage).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "image.txt"

# Debian 12's python3 on x86_64, as in scripts/lock-image.
IMAGE_MARKERS = {
    "implementation_name": "cpython",
    "implementation_version": "3.11.2",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "platform_system": "Linux",
    "python_full_version": "3.11.2",
    "python_version": "3.11",
    "sys_platform": "linux",
}
PIN = re.compile(r"(?P<name>[A-Za-z0-9._-]+)==(?P<version>[^\s\\]+)(?P<hashes>(?:\s+--hash=\S+)*)")
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def parse_lock(text: str) -> tuple[dict[str, str], list[str]]:
    """The pins (name -> version) and a problem for each entry that is not name==version
    with at least one sha256 hash."""
    # As pip reads it: continuation lines joined first, then comments dropped.
    logical = [line.split("#", 1)[0] for line in text.replace("\\\n", " ").splitlines()]
    pins: dict[str, str] = {}
    problems = []
    for entry in (e.strip() for e in logical):
        if not entry:
            continue
        m = PIN.fullmatch(entry)
        if m is None:
            problems.append(f"not an exact pin with hashes: {entry!r}")
            continue
        hashes = m["hashes"].split()
        if not hashes or not all(HASH.fullmatch(h) for h in hashes):
            problems.append(
                f"{m['name']}: needs at least one --hash=sha256:<64 hex> and only those"
            )
        name = canonicalize_name(m["name"])
        if name in pins:
            problems.append(f"{name} is pinned twice")
        pins[name] = m["version"]
    return pins, problems


def applies(req: Requirement, extras: set[str]) -> bool:
    """Whether pip in the image installs this requirement of a package asked for with extras."""
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**IMAGE_MARKERS, "extra": e}) for e in extras | {""})


def project_requirements() -> dict[str, list[tuple[SpecifierSet, str]]]:
    """The packages pyproject.toml asks for in the image (its dependencies whose markers
    hold there, and its build system), with the specifiers asking for each."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    asked: dict[str, list[tuple[SpecifierSet, str]]] = {}
    for text in pyproject["project"]["dependencies"]:
        req = Requirement(text)
        if applies(req, set()):
            asked.setdefault(canonicalize_name(req.name), []).append(
                (req.specifier, "pyproject.toml")
            )
    for text in pyproject["build-system"]["requires"]:
        req = Requirement(text)
        asked.setdefault(canonicalize_name(req.name), []).append((req.specifier, "build-system"))
    return asked


def lock_problems(text: str) -> list[str]:
    """Everything that makes the lock disagree with pyproject.toml; empty when the image
    would install every package sqlgate asks for, at a version it accepts, hash-checked."""
    pins, problems = parse_lock(text)
    for name, asked in sorted(project_requirements().items()):
        if name not in pins:
            who = ", ".join(sorted({p for _, p in asked}))
            problems.append(f"{name} (asked for by {who}) is not pinned")
            continue
        for spec, parent in asked:
            if not spec.contains(pins[name], prereleases=True):
                problems.append(f"{name}=={pins[name]} does not satisfy {parent}'s {name}{spec}")
    return problems


def test_the_image_lock_pins_what_pyproject_asks_for_with_hashes() -> None:
    assert lock_problems(LOCK.read_text()) == []


def test_a_lock_that_drifted_from_pyproject_is_caught() -> None:
    text = LOCK.read_text()
    without_uvloop = re.sub(r"\nuvloop==[^\n]*(\n    [^\n]*)*", "", text)
    assert without_uvloop != text
    assert lock_problems(without_uvloop) == ["uvloop (asked for by pyproject.toml) is not pinned"]
    older = re.sub(r"(?m)^pyjwt==\S+", "pyjwt==2.10.0", text)
    assert lock_problems(older) == ["pyjwt==2.10.0 does not satisfy pyproject.toml's pyjwt>=2.10.1"]
    unhashed = re.sub(r"(?m)^(mdurl==\S+) \\\n    --hash=\S+", r"\1", text)
    assert lock_problems(unhashed) == [
        "mdurl: needs at least one --hash=sha256:<64 hex> and only those"
    ]
    ranged = text.replace("uvloop==", "uvloop>=")
    assert any("not an exact pin" in p for p in lock_problems(ranged))
    twice = text + "\nuvloop==0.21.0 \\\n    --hash=sha256:" + "0" * 64 + "\n"
    assert lock_problems(twice) == ["uvloop is pinned twice"]


def test_the_image_installs_only_from_the_lock() -> None:
    containerfile = (REPO / "Containerfile").read_text()
    install = "pip install --require-hashes --no-deps --only-binary=:all:"
    assert install in containerfile
    assert "--requirement requirements/image.txt" in containerfile
    assert "COPY requirements/image.txt" in containerfile
    # The only other install is sqlgate itself, with neither an index nor dependencies.
    installs = re.findall(r"pip install [^\n\\]*", containerfile)
    assert [i.strip() for i in installs] == [
        install,
        "pip install --no-deps --no-build-isolation --no-index .",
    ]
