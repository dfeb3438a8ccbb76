"""The configuration examples of README.md and docs/*.md name only keys the gateway
knows, in the sections it reads them from, and the commented-out keys of the README's
complete example show the defaults the gateway takes: operators copy these blocks."""

from __future__ import annotations

import enum
import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.config import Config, ConfigError, load_config
from appliance.ledger.chain import generate_key, private_key_pem

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_HEADER = re.compile(r"\[\[?\s*([\w.]+)\s*\]\]?")
_KEY = re.compile(r"([A-Za-z_]\w*)\s*=")
_COMMENTED = re.compile(r"#\s*(\[\[?[\w.]+\]\]?(?:\s+#.*)?|[A-Za-z_]\w*\s*=.*)$")

ARRAYS = ("accounts", "targets", "rules", "masking")

# Every required key, so that one more key can be tried alone.
MINIMAL: dict[str, object] = {
    "appliance": {"default_target": "orders", "state_dir": "state"},
    "targets": [
        {
            "name": "orders",
            "host": "10.77.2.10",
            "user": "sqlgate",
            "password_file": "orders.pw",
        }
    ],
    "ledger": {"path": "ledger.db", "signing_key": "ledger.key"},
}
# For the defaults: every optional section present with only its required keys.
SECTIONS: dict[str, object] = {
    "identity": {"issuer": "https://idp.example.com", "audience": "sqlgate"},
    "bus": {},
    "approvals": {},
    "policy": {},
    "recording": {},
    "network": {},
}


def toml_text(config: dict[str, object]) -> str:
    """TOML for the plain values the examples use (JSON's strings, numbers and
    booleans are TOML's)."""
    lines: list[str] = []
    for section, body in config.items():
        tables = body if isinstance(body, list) else [body]
        for table in tables:
            lines.append(f"[[{section}]]" if isinstance(body, list) else f"[{section}]")
            lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


def example_keys(path: Path) -> Iterator[tuple[int, str, str, object, bool]]:
    """(line, section, key, value, commented out) of every key in the file's TOML blocks."""
    inside = False
    section = ""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            inside = line.strip() == "```toml"
            section = ""
            continue
        if not inside:
            continue
        text = line.strip()
        commented = False
        match = _COMMENTED.fullmatch(text)
        if match:
            text, commented = match.group(1), True
        if text.startswith("["):
            header = _HEADER.match(text)
            assert header, f"{path.name}:{number}: {line}"
            section = header.group(1)
        elif _KEY.match(text):
            (key, value), *_ = tomllib.loads(text).items()
            yield number, section, key, value, commented


def cases() -> list[tuple[str, int, str, str, object, bool]]:
    return [(path.name, *entry) for path in DOCS for entry in example_keys(path)]


@pytest.fixture
def confdir(tmp_path: Path) -> Path:
    (tmp_path / "orders.pw").write_bytes(b"orders-secret\n")
    (tmp_path / "ledger.key").write_bytes(private_key_pem(generate_key()))
    (tmp_path / "ledger.key").chmod(0o600)
    return tmp_path


def load(directory: Path, config: dict[str, object]) -> Config:
    path = directory / "sqlgate.toml"
    path.write_text(toml_text(config))
    return load_config(path)


def with_key(section: str, key: str, value: object) -> dict[str, object]:
    config = json.loads(json.dumps(MINIMAL))
    if section in ARRAYS:
        tables = config.setdefault(section, [{}])
        tables[0][key] = value
    else:
        config.setdefault(section, {})[key] = value
    return config


def test_the_docs_have_configuration_examples() -> None:
    found = {(file, section, key) for file, _, section, key, _, _ in cases()}
    assert ("README.md", "appliance", "max_sessions") in found
    assert ("recording.md", "recording", "keep_days") in found


@pytest.mark.parametrize(("file", "line", "section", "key", "value", "commented"), cases())
def test_every_documented_key_is_known_in_its_section(
    confdir: Path, file: str, line: int, section: str, key: str, value: object, commented: bool
) -> None:
    assert section, f"{file}:{line}: {key} outside any section"
    try:
        load(confdir, with_key(section, key, value))
    except ConfigError as exc:
        assert "unknown key" not in str(exc), f"{file}:{line}: {exc}"


def default_of(config: Config, section: str, key: str) -> object:
    holder = config.targets[0] if section == "targets" else getattr(config, section)
    value = getattr(holder, key)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    return value


def test_the_readme_example_comments_out_only_defaults(confdir: Path) -> None:
    """A commented-out key of the complete example is the value the gateway takes
    without it (keys with no default, such as a bus user name, are examples)."""
    config = load(confdir, {**MINIMAL, **SECTIONS})
    wrong = []
    for line, section, key, value, commented in example_keys(ROOT / "README.md"):
        if not commented or section in ARRAYS and section != "targets":
            continue
        given = SECTIONS.get(section)
        if isinstance(given, dict) and key in given:
            continue  # required: the example's value is an example
        default = default_of(config, section, key)
        if default is None or default == []:
            continue
        if default != value:
            wrong.append(f"README.md:{line}: [{section}] {key} = {value!r}, default {default!r}")
    assert not wrong, "\n".join(wrong)
