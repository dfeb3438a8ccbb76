"""appliance.config: the SPEC example loads field by field; each kind of mistake is one
ConfigError naming the exact key, and ``sqlgate check`` answers it with exit 2."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from lab.tokens import write_jwks

from appliance import routing
from appliance.cli import main
from appliance.config import (
    DEFAULT_ALGORITHMS,
    Config,
    ConfigError,
    MaskStrategy,
    RuleAction,
    TargetTLS,
    load_config,
)
from appliance.ledger.chain import generate_key, private_key_pem, public_key_pem

CI_PASSWORD = b"ci-bot-secret"
CI_STAGE2 = hashlib.sha1(hashlib.sha1(CI_PASSWORD).digest()).digest()
CI_HASH = "*" + CI_STAGE2.hex().upper()

# SPEC §4, verbatim but for a real password hash.
SPEC_EXAMPLE = f"""
[appliance]
name = "edge-1"
listen = "0.0.0.0:3307"
default_target = "orders"
state_dir = "/var/lib/sqlgate"

[tls]                       # certificate the gateway presents to clients
cert_file = "gateway.crt"
key_file  = "gateway.key"

[identity]
issuer   = "https://idp.example.com"
audience = "sqlgate"
jwks_file = "jwks.json"     # or jwks_url = "https://..." (cached, refreshed on unknown kid)
groups_claim = "groups"
username_claim = "email"

[[accounts]]                # gateway accounts for clients that cannot present a token
user = "ci-bot"
password_hash = "{CI_HASH}"
groups = ["agents"]

[[targets]]
name = "orders"
host = "10.77.2.10"
port = 3306
user = "sqlgate"            # the vaulted backend credential
password_file = "orders.pw"
allow_groups = ["agents", "dba"]

[ledger]
path = "ledger.db"
signing_key = "ledger.key"
fsync = false               # true: also survive power loss, not only a crash

[bus]
url = "mqtt://127.0.0.1:1883"
topic_prefix = "sqlgate"

[approvals]
timeout_s = 120
approver_groups = ["dba"]

[[rules]]                   # evaluated in order, first match wins; built-in defaults follow
name = "review-schema-changes"
statements = ["ALTER TABLE", "DROP TABLE"]
action = "review"           # allow | block | review

[[masking]]
column = "shop.customers.card_number"   # schema.table.column, '*' allowed in each part
strategy = "last4"                      # redact | last4 | hash | null
exempt_groups = ["pii-readers"]
"""

MINIMAL = """
[appliance]
name = "edge-1"
listen = "127.0.0.1:3307"
default_target = "orders"
state_dir = "state"

[[targets]]
name = "orders"
host = "10.77.2.10"
user = "sqlgate"
password_file = "orders.pw"
allow_groups = ["agents"]

[ledger]
path = "ledger.db"
signing_key = "ledger.key"
"""

SECOND_TARGET = """
[[targets]]
name = "billing"
host = "db.billing.internal"
user = "sqlgate"
password_file = "billing.pw"
"""


@pytest.fixture
def confdir(tmp_path: Path) -> Path:
    """A directory holding every file the configurations above refer to."""
    (tmp_path / "gateway.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "gateway.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    write_jwks(tmp_path / "jwks.json")
    (tmp_path / "orders.pw").write_bytes(b"orders-secret\n")
    (tmp_path / "billing.pw").write_bytes(b"billing-secret")
    (tmp_path / "ledger.key").write_bytes(private_key_pem(generate_key()))
    (tmp_path / "ledger.key").chmod(0o600)  # the gateway refuses a key others can read
    (tmp_path / "a-directory").mkdir()
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    return tmp_path


def write(directory: Path, text: str) -> Path:
    path = directory / "sqlgate.toml"
    path.write_text(text)
    return path


def load(directory: Path, text: str) -> Config:
    return load_config(write(directory, text))


# --- a complete configuration ----------------------------------------------------------


def test_spec_example_loads_every_field(
    confdir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = write(confdir, SPEC_EXAMPLE)
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))  # paths follow the file, not cwd
    config = load_config(path)

    assert config.path == path.resolve()
    assert config.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()

    a = config.appliance
    assert (a.name, a.listen, a.listen_host, a.listen_port) == (
        "edge-1",
        "0.0.0.0:3307",
        "0.0.0.0",
        3307,
    )
    assert a.default_target == "orders"
    assert a.state_dir == Path("/var/lib/sqlgate")
    assert a.max_packet == 64 * 1024 * 1024
    assert a.max_buffered == 512 * 1024 * 1024
    assert a.max_sessions == 2000  # above the 1,000 idle sessions of the bench
    assert a.max_prepared_per_session == 1024
    assert a.drain_timeout_s == 30.0

    assert config.tls is not None
    assert config.tls.cert_file == confdir.resolve() / "gateway.crt"
    assert config.tls.key_file == confdir.resolve() / "gateway.key"

    i = config.identity
    assert i is not None
    assert (i.issuer, i.audience) == ("https://idp.example.com", "sqlgate")
    assert i.jwks_file == confdir.resolve() / "jwks.json"
    assert i.jwks_url is None
    assert (i.groups_claim, i.username_claim) == ("groups", "email")
    assert i.algorithms == DEFAULT_ALGORITHMS
    assert "none" not in i.algorithms and not any(alg.startswith("HS") for alg in i.algorithms)
    assert (i.leeway_s, i.max_lifetime_s) == (30.0, 86400.0)
    assert (i.max_token_bytes, i.ca_file) == (16384, None)

    (account,) = config.accounts
    assert account.user == "ci-bot"
    assert account.password_hash == CI_HASH
    assert account.stage2 == CI_STAGE2 and len(account.stage2) == 20
    assert account.groups == ("agents",)
    assert config.account("ci-bot") is account
    assert config.account("nobody") is None

    (target,) = config.targets
    assert config.target("orders") is target
    assert (target.name, target.host, target.port, target.user) == (
        "orders",
        "10.77.2.10",
        3306,
        "sqlgate",
    )
    assert target.password_file == confdir.resolve() / "orders.pw"
    assert target.password == b"orders-secret"  # one trailing newline stripped
    assert target.allow_groups == ("agents", "dba")
    assert target.tls is TargetTLS.PREFERRED and target.tls == "preferred"
    assert target.tls_verify is False
    assert target.tls_ca_file is None
    assert target.connect_timeout_s == 5.0

    assert config.ledger.path == confdir.resolve() / "ledger.db"
    assert config.ledger.signing_key == confdir.resolve() / "ledger.key"
    assert config.ledger.fsync is False

    b = config.bus
    assert (b.url, b.host, b.port, b.tls) == ("mqtt://127.0.0.1:1883", "127.0.0.1", 1883, False)
    assert b.topic_prefix == "sqlgate"
    assert (b.username, b.password_file, b.password) == (None, None, None)

    assert config.approvals.timeout_s == 120.0
    assert config.approvals.approver_groups == ("dba",)

    (rule,) = config.rules
    assert rule.name == "review-schema-changes"
    assert rule.statements == ("ALTER TABLE", "DROP TABLE")
    assert rule.action is RuleAction.REVIEW
    assert (rule.tables, rule.groups, rule.identities, rule.targets) == (None, None, None, None)

    (mask,) = config.masking
    assert mask.column == "shop.customers.card_number"
    assert (mask.schema, mask.table, mask.column_name) == ("shop", "customers", "card_number")
    assert mask.strategy is MaskStrategy.LAST4
    assert mask.exempt_groups == ("pii-readers",)

    assert config.network.manage_rules is False
    assert config.network.interfaces is None
    assert config.network.mark == 0x5147


def test_an_account_name_of_256_bytes_is_accepted(confdir: Path) -> None:
    text = MINIMAL + f'\n[[accounts]]\nuser = "{"é" * 128}"\npassword_hash = "{CI_HASH}"\n'
    (account,) = load(confdir, text).accounts
    assert len(account.user.encode()) == 256


def test_minimal_config_takes_defaults(confdir: Path) -> None:
    config = load(confdir, MINIMAL)
    assert config.tls is None
    assert config.identity is None
    assert config.accounts == () and config.rules == () and config.masking == ()
    assert config.bus.url == "mqtt://127.0.0.1:1883" and config.bus.topic_prefix == "sqlgate"
    assert config.approvals.timeout_s == 120.0
    assert config.approvals.approver_groups == ("dba",)
    assert config.network.mark == 0x5147
    assert config.appliance.state_dir == confdir.resolve() / "state"
    assert config.target("orders").port == 3306


def test_every_optional_key(confdir: Path) -> None:
    (confdir / "ca.pem").write_text("ca\n")
    (confdir / "bus.pw").write_text("bus-secret\r\n")
    text = (
        MINIMAL.replace('listen = "127.0.0.1:3307"', 'listen = "[::]:3307"')
        .replace(
            'state_dir = "state"',
            'state_dir = "state"\nmax_packet = 1048576\ndrain_timeout_s = 2.5\nmax_sessions = 50\n'
            "max_prepared_per_session = 64",
        )
        .replace(
            'allow_groups = ["agents"]',
            'allow_groups = ["agents"]\nport = 3307\ntls = "required"\ntls_verify = true\n'
            'tls_ca_file = "ca.pem"\nconnect_timeout_s = 1',
        )
        .replace('signing_key = "ledger.key"', 'signing_key = "ledger.key"\nfsync = true')
        + """
[identity]
issuer = "https://idp"
audience = "sqlgate"
jwks_url = "https://idp/jwks"
groups_claim = "roles"
username_claim = "preferred_username"
algorithms = ["EdDSA"]
leeway_s = 5
max_lifetime_s = 3600
max_token_bytes = 4096
ca_file = "ca.pem"

[bus]
url = "mqtts://broker.example"
topic_prefix = "corp/sqlgate"
username = "gw"
password_file = "bus.pw"

[approvals]
timeout_s = 30
approver_groups = ["dba", "sre"]

[[rules]]
name = "no-writes-for-agents"
statements = ["  insert ", "update"]
action = "block"
tables = ["shop.orders"]
groups = ["agents"]
identities = ["bot@example.com"]
targets = ["orders"]

[[masking]]
column = "*.*.email"
strategy = "hash"

[network]
manage_rules = true
interfaces = ["veth-db"]
mark = 7
"""
    )
    config = load(confdir, text)
    assert (config.appliance.listen_host, config.appliance.listen_port) == ("::", 3307)
    assert config.appliance.max_packet == 1048576
    assert config.appliance.drain_timeout_s == 2.5
    assert config.appliance.max_sessions == 50
    assert config.appliance.max_prepared_per_session == 64
    target = config.target("orders")
    assert (target.port, target.tls, target.tls_verify) == (3307, TargetTLS.REQUIRED, True)
    assert target.tls_ca_file == confdir.resolve() / "ca.pem"
    assert target.connect_timeout_s == 1.0
    assert config.ledger.fsync is True
    identity = config.identity
    assert identity is not None
    assert (identity.jwks_file, identity.jwks_url) == (None, "https://idp/jwks")
    assert (identity.groups_claim, identity.username_claim) == ("roles", "preferred_username")
    assert identity.algorithms == ("EdDSA",)
    assert (identity.leeway_s, identity.max_lifetime_s) == (5.0, 3600.0)
    assert (identity.max_token_bytes, identity.ca_file) == (4096, confdir.resolve() / "ca.pem")
    bus = config.bus
    assert (bus.host, bus.port, bus.tls, bus.topic_prefix) == (
        "broker.example",
        8883,
        True,
        "corp/sqlgate",
    )
    assert (bus.username, bus.password) == ("gw", b"bus-secret")
    assert config.approvals.approver_groups == ("dba", "sre")
    (rule,) = config.rules
    assert rule.statements == ("INSERT", "UPDATE")
    assert rule.action is RuleAction.BLOCK
    assert (rule.tables, rule.groups, rule.identities, rule.targets) == (
        ("shop.orders",),
        ("agents",),
        ("bot@example.com",),
        ("orders",),
    )
    (mask,) = config.masking
    assert (mask.schema, mask.table, mask.column_name) == ("*", "*", "email")
    assert mask.strategy is MaskStrategy.HASH
    assert config.network == type(config.network)(
        manage_rules=True, interfaces=("veth-db",), mark=7
    )


def test_identity_without_jwks_uses_discovery(confdir: Path) -> None:
    text = MINIMAL + '\n[identity]\nissuer = "https://idp.example.com"\naudience = "sqlgate"\n'
    identity = load(confdir, text).identity
    assert identity is not None
    assert (identity.jwks_file, identity.jwks_url) == (None, None)


def test_default_target_may_be_left_out_with_one_target(confdir: Path) -> None:
    config = load(confdir, MINIMAL.replace('default_target = "orders"\n', ""))
    assert config.appliance.default_target == "orders"


def test_second_target_and_ipv6_host(confdir: Path) -> None:
    text = MINIMAL.replace('host = "10.77.2.10"', 'host = "[fd00:77::10]"') + SECOND_TARGET
    config = load(confdir, text)
    assert [t.name for t in config.targets] == ["orders", "billing"]
    assert config.target("orders").host == "fd00:77::10"
    assert config.target("billing").host == "db.billing.internal"
    assert config.target("billing").password == b"billing-secret"  # no newline to strip
    with pytest.raises(KeyError):
        config.target("nope")


def test_only_one_trailing_newline_is_stripped(confdir: Path) -> None:
    (confdir / "orders.pw").write_bytes(b" pass word \n\n")
    assert load(confdir, MINIMAL).target("orders").password == b" pass word \n"


def test_secrets_stay_out_of_repr_and_config_is_frozen(confdir: Path) -> None:
    config = load(confdir, SPEC_EXAMPLE)
    target = config.target("orders")
    assert b"orders-secret".decode() not in repr(target)
    assert "orders-secret" not in repr(config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        target.port = 1  # type: ignore[misc]
    assert not hasattr(target, "__dict__")  # slots


# --- every kind of mistake: exact key, one line, exit 2 from `sqlgate check` ------------


def check_fails(
    directory: Path, text: str, key: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> ConfigError:
    """Assert that loading fails at ``key`` and that ``sqlgate check`` exits 2 saying so."""
    path = write(directory, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    error = info.value
    assert error.key == key
    assert problem in error.problem
    prefix = f"{path}: {key}: " if key else f"{path}: "
    assert str(error) == prefix + error.problem

    assert main(["check", "-c", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"sqlgate: {error}\n"
    return error


CASES = [
    # (id, transform of MINIMAL, key, problem fragment)
    ("unknown-top-level-key", lambda t: 'colour = "blue"\n' + t, "colour", "unknown key"),
    (
        "unknown-nested-key",
        lambda t: t.replace("password_file =", "pasword_file ="),
        "targets[0].pasword_file",
        "did you mean 'password_file'?",
    ),
    (
        "unknown-key-in-optional-section",
        lambda t: t + "\n[bus]\nurl = 'mqtt://b'\ntopic = 'x'\n",
        "bus.topic",
        "unknown key",
    ),
    (
        "key-in-another-section",
        lambda t: t.replace('path = "ledger.db"', 'path = "ledger.db"\nport = 3306'),
        "ledger.port",
        "unknown key (port is a key of [[targets]]: move it there); known keys: path,",
    ),
    (
        "key-above-every-header",
        lambda t: 'listen = "127.0.0.1:3307"\n' + t,
        "listen",
        "unknown key (listen is a key of [appliance]: move it there)",
    ),
    (
        "misspelled-key-that-another-section-has",
        lambda t: t.replace('state_dir = "state"', 'state_dir = "state"\npassword_file = "x"'),
        "appliance.password_file",
        "unknown key (password_file is a key of [[targets]] or [bus]: move it there)",
    ),
    (
        "empty-file",
        lambda t: "# only a comment\n\n",
        "",
        "holds no settings: a configuration needs [appliance], [[targets]] and [ledger]",
    ),
    (
        "missing-ledger",
        lambda t: t[: t.index("[ledger]")],
        "ledger",
        "required section [ledger] is missing",
    ),
    (
        "missing-appliance",
        lambda t: t[t.index("[[targets]]") :],
        "appliance",
        "required section [appliance] is missing",
    ),
    (
        "no-targets",
        lambda t: t[: t.index("[[targets]]")] + t[t.index("[ledger]") :],
        "targets",
        "at least one [[targets]]",
    ),
    (
        "missing-required-key",
        lambda t: t.replace('user = "sqlgate"\n', ""),
        "targets[0].user",
        "required key is missing",
    ),
    (
        "missing-password-file",
        lambda t: t.replace('"orders.pw"', '"missing.pw"'),
        "targets[0].password_file",
        "No such file or directory",
    ),
    (
        "unreadable-secret",
        lambda t: t.replace('"orders.pw"', '"a-directory"'),
        "targets[0].password_file",
        "is a directory",
    ),
    (
        "listen-without-port",
        lambda t: t.replace('"127.0.0.1:3307"', '"1.2.3.4"'),
        "appliance.listen",
        "has no port",
    ),
    (
        "listen-port-out-of-range",
        lambda t: t.replace('"127.0.0.1:3307"', '"1.2.3.4:70000"'),
        "appliance.listen",
        "between 0 and 65535",
    ),
    (
        "listen-host-not-an-address",
        lambda t: t.replace('"127.0.0.1:3307"', '"nonsense:12"'),
        "appliance.listen",
        "'nonsense' is not an IP address",
    ),
    (
        "listen-ipv6-without-brackets",
        lambda t: t.replace('"127.0.0.1:3307"', '"::1:3307"'),
        "appliance.listen",
        "in brackets",
    ),
    (
        "bad-host",
        lambda t: t.replace('"10.77.2.10"', '"db host!"'),
        "targets[0].host",
        "not an IP address or host name",
    ),
    (
        "bad-ipv4-host",
        lambda t: t.replace('"10.77.2.10"', '"10.77.2.300"'),
        "targets[0].host",
        "not a valid IPv4 address",
    ),
    (
        "host-with-port",
        lambda t: t.replace('"10.77.2.10"', '"db:3306"'),
        "targets[0].host",
        "the port has its own key",
    ),
    (
        "default-target-names-no-target",
        lambda t: t.replace('default_target = "orders"', 'default_target = "ordres"'),
        "appliance.default_target",
        "'ordres' is not a configured target",
    ),
    (
        "default-target-needed-with-two-targets",
        lambda t: t.replace('default_target = "orders"\n', "") + SECOND_TARGET,
        "appliance.default_target",
        "required when there is more than one target",
    ),
    (
        "duplicate-target-names",
        lambda t: t + SECOND_TARGET.replace('"billing"', '"orders"'),
        "targets[1].name",
        "duplicate target name 'orders' (also targets[0])",
    ),
    (
        "bad-password-hash",
        lambda t: t + '\n[[accounts]]\nuser = "ci"\npassword_hash = "*ABCDEF"\n',
        "accounts[0].password_hash",
        "40 hex digits (the mysql_native_password hash of the password, which "
        "'sqlgate account hash' prints)",
    ),
    (
        "account-with-the-empty-password",  # BUG: anyone logged in with no password, over TLS
        lambda t: (
            t + '\n[[accounts]]\nuser = "ci"\n'
            'password_hash = "*be1bdec0aa74b4dcb079943e70528096cca985f8"\n'
        ),
        "accounts[0].password_hash",
        "is the hash of the empty password",
    ),
    (
        "account-user-over-256-bytes",  # 86 x 3 bytes in UTF-8: it could never log in
        lambda t: t + f'\n[[accounts]]\nuser = "{"€" * 86}"\npassword_hash = "{CI_HASH}"\n',
        "accounts[0].user",
        "is 258 bytes in UTF-8, more than the 256 a login's user name may have",
    ),
    (
        "account-user-with-a-nul",
        lambda t: t + f'\n[[accounts]]\nuser = "ci\\u0000bot"\npassword_hash = "{CI_HASH}"\n',
        "accounts[0].user",
        "cannot contain a NUL character",
    ),
    (
        "bad-masking-column",
        lambda t: t + '\n[[masking]]\ncolumn = "customers.card"\nstrategy = "redact"\n',
        "masking[0].column",
        "expected schema.table.column",
    ),
    (
        "bad-masking-strategy",
        lambda t: t + '\n[[masking]]\ncolumn = "a.b.c"\nstrategy = "blur"\n',
        "masking[0].strategy",
        "expected one of redact, last4, hash, null, got 'blur'",
    ),
    (
        "unknown-detector",
        lambda t: t + '\n[[masking]]\ndetect = ["card", "iban"]\nstrategy = "redact"\n',
        "masking[0].detect[1]",
        "'iban': expected one of card, email",
    ),
    (
        "detector-with-column",
        lambda t: t + '\n[[masking]]\ndetect = ["card"]\ncolumn = "a.b.c"\nstrategy = "redact"\n',
        "masking[0].detect",
        "a content rule (detect) applies to every column",
    ),
    (
        "bad-on-use",
        lambda t: t + '\n[[masking]]\ncolumn = "a.b.c"\nstrategy = "redact"\non_use = "mask"\n',
        "masking[0].on_use",
        "'mask': expected refuse or rewrite",
    ),
    (
        "bad-rule-action",
        lambda t: t + '\n[[rules]]\nname = "r"\nstatements = ["DROP TABLE"]\naction = "deny"\n',
        "rules[0].action",
        "expected one of allow, block, review, got 'deny'",
    ),
    (
        "rule-names-unknown-target",
        lambda t: (
            t
            + '\n[[rules]]\nname = "r"\nstatements = ["SELECT"]\naction = "allow"\n'
            + 'targets = ["nope"]\n'
        ),
        "rules[0].targets[0]",
        "'nope' is not a configured target",
    ),
    (
        "bool-for-int",
        lambda t: t.replace('user = "sqlgate"', 'user = "sqlgate"\nport = true'),
        "targets[0].port",
        "expected an integer, got a boolean",
    ),
    (
        "bool-for-seconds",
        lambda t: t + "\n[approvals]\ntimeout_s = true\n",
        "approvals.timeout_s",
        "got a boolean",
    ),
    (
        "string-for-int",
        lambda t: t.replace('user = "sqlgate"', 'user = "sqlgate"\nport = "3306"'),
        "targets[0].port",
        "expected an integer, got a string",
    ),
    (
        "int-for-bool",
        lambda t: t.replace('signing_key = "ledger.key"', 'signing_key = "ledger.key"\nfsync = 1'),
        "ledger.fsync",
        "expected a boolean",
    ),
    (
        "string-for-list",
        lambda t: t.replace('["agents"]', '"agents"'),
        "targets[0].allow_groups",
        "expected an array of strings, got a string",
    ),
    (
        "int-in-list",
        lambda t: t.replace('["agents"]', '["agents", 7]'),
        "targets[0].allow_groups[1]",
        "expected a string, got an integer",
    ),
    (
        "section-of-wrong-type",
        lambda t: 'network = "on"\n' + t,
        "network",
        "expected a table",
    ),
    (
        "targets-as-single-table",
        lambda t: t.replace("[[targets]]", "[targets]"),
        "targets",
        "expected an array of tables",
    ),
    (
        "max-packet-out-of-bounds",
        lambda t: t.replace('state_dir = "state"', 'state_dir = "state"\nmax_packet = 10'),
        "appliance.max_packet",
        "must be between 1024 and",
    ),
    (
        "max-sessions-zero",
        lambda t: t.replace('state_dir = "state"', 'state_dir = "state"\nmax_sessions = 0'),
        "appliance.max_sessions",
        "must be between 1 and 1000000, got 0",
    ),
    (
        "max-sessions-not-an-integer",
        lambda t: t.replace('state_dir = "state"', 'state_dir = "state"\nmax_sessions = "many"'),
        "appliance.max_sessions",
        "expected an integer, got",
    ),
    (
        "max-prepared-per-session-zero",
        lambda t: t.replace(
            'state_dir = "state"', 'state_dir = "state"\nmax_prepared_per_session = 0'
        ),
        "appliance.max_prepared_per_session",
        "must be between 1 and 1048576, got 0",
    ),
    (
        "max-prepared-per-session-misspelled",
        lambda t: t.replace(
            'state_dir = "state"', 'state_dir = "state"\nmax_prepared_per_sesion = 10'
        ),
        "appliance.max_prepared_per_sesion",
        "unknown key (did you mean 'max_prepared_per_session'?)",
    ),
    (
        "max-buffered-below-max-packet",
        lambda t: t.replace(
            'state_dir = "state"', 'state_dir = "state"\nmax_packet = 4096\nmax_buffered = 2048'
        ),
        "appliance.max_buffered",
        "must be at least max_packet (4096)",
    ),
    (
        "bad-target-tls-mode",
        lambda t: t.replace('user = "sqlgate"', 'user = "sqlgate"\ntls = "yes"'),
        "targets[0].tls",
        "expected one of preferred, required, disabled",
    ),
    (
        "target-tls-verify-when-disabled",
        lambda t: t.replace(
            'user = "sqlgate"', 'user = "sqlgate"\ntls = "disabled"\ntls_verify = true'
        ),
        "targets[0].tls_verify",
        'has no effect with targets[0].tls = "disabled"',
    ),
    (
        "target-tls-verify-when-only-preferred",
        lambda t: t.replace('user = "sqlgate"', 'user = "sqlgate"\ntls_verify = true'),
        "targets[0].tls_verify",
        'needs targets[0].tls = "required": with "preferred" a server that offers no TLS',
    ),
    (
        "tls-cert-without-key",
        lambda t: t + '\n[tls]\ncert_file = "gateway.crt"\n',
        "tls.key_file",
        "required together with tls.cert_file",
    ),
    (
        "jwks-file-and-url",
        lambda t: (
            t
            + '\n[identity]\nissuer = "i"\naudience = "a"\njwks_file = "jwks.json"\n'
            + 'jwks_url = "https://idp/jwks"\n'
        ),
        "identity.jwks_url",
        "not both",
    ),
    (
        "discovery-needs-an-https-issuer",
        lambda t: t + '\n[identity]\nissuer = "http://idp"\naudience = "a"\n',
        "identity.issuer",
        "'http://idp' is not an https:// URL, so its discovery document cannot be fetched",
    ),
    (
        "max-token-bytes-out-of-bounds",
        lambda t: (
            t
            + '\n[identity]\nissuer = "i"\naudience = "a"\njwks_file = "jwks.json"\n'
            + "max_token_bytes = 100\n"
        ),
        "identity.max_token_bytes",
        "must be between 1024 and 65536, got 100",
    ),
    (
        "missing-identity-ca-file",
        lambda t: (
            t + '\n[identity]\nissuer = "https://idp"\naudience = "a"\nca_file = "noca.pem"\n'
        ),
        "identity.ca_file",
        "No such file or directory",
    ),
    (
        "symmetric-algorithm",
        lambda t: (
            t
            + '\n[identity]\nissuer = "i"\naudience = "a"\njwks_file = "jwks.json"\n'
            + 'algorithms = ["RS256", "HS256"]\n'
        ),
        "identity.algorithms[1]",
        "'HS256' is not allowed",
    ),
    (
        "bad-bus-url",
        lambda t: t + '\n[bus]\nurl = "http://127.0.0.1:1883"\n',
        "bus.url",
        "expected mqtt://HOST:PORT or mqtts://HOST:PORT",
    ),
    (
        "bus-ca-file-without-tls",
        lambda t: t + '\n[bus]\nurl = "mqtt://127.0.0.1:1883"\nca_file = "ledger.key"\n',
        "bus.ca_file",
        "only for an mqtts:// broker",
    ),
    (
        "approvals-without-identity",
        lambda t: t + "\n[approvals]\ntimeout_s = 60\n",
        "approvals",
        "approvals need [identity]",
    ),
    (
        "empty-approver-groups",
        lambda t: t + "\n[approvals]\napprover_groups = []\n",
        "approvals.approver_groups",
        "at least one group",
    ),
    (
        "missing-signing-key",
        lambda t: t.replace('"ledger.key"', '"nokey"'),
        "ledger.signing_key",
        "No such file or directory",
    ),
    ("toml-syntax-error", lambda t: t + "\nfsync = = true\n", "", "invalid TOML"),
    (
        "targets-sharing-an-address",
        lambda t: t + SECOND_TARGET.replace('"db.billing.internal"', '"10.77.2.10"'),
        "targets[1].host",
        "'10.77.2.10' port 3306 is also the address of targets[0] ('orders')",
    ),
    (
        "ipv4-mapped-target-sharing-an-address",
        lambda t: t + SECOND_TARGET.replace('"db.billing.internal"', '"::ffff:10.77.2.10"'),
        "targets[1].host",
        "'::ffff:10.77.2.10' port 3306 is also the address of targets[0] ('orders')",
    ),
    (
        "issuer-with-an-unclosed-bracket",
        lambda t: t + '\n[identity]\nissuer = "https://[::1"\naudience = "a"\n',
        "identity.issuer",
        "'https://[::1' is not a valid URL",
    ),
    (
        "jwks-url-with-an-unclosed-bracket",
        lambda t: (
            t + '\n[identity]\nissuer = "i"\naudience = "a"\njwks_url = "https://[::1/jwks"\n'
        ),
        "identity.jwks_url",
        "'https://[::1/jwks' is not a valid URL",
    ),
    (
        "bus-url-with-an-unclosed-bracket",
        lambda t: t + '\n[bus]\nurl = "mqtt://[::1"\n',
        "bus.url",
        "'mqtt://[::1' is not a valid URL",
    ),
    *(
        (
            f"nul-in-{key}",
            lambda t, old=old: t.replace(old, f'{old.split("=")[0]}= "a\\u0000b"'),
            key,
            "a path cannot contain a NUL character",
        )
        for key, old in (
            ("ledger.path", 'path = "ledger.db"'),
            ("ledger.signing_key", 'signing_key = "ledger.key"'),
            ("appliance.state_dir", 'state_dir = "state"'),
            ("targets[0].password_file", 'password_file = "orders.pw"'),
        )
    ),
    (
        "path-in-a-symbolic-link-loop",
        lambda t: t.replace('state_dir = "state"', 'state_dir = "loop/state"'),
        "appliance.state_dir",
        "cannot resolve loop/state: a symbolic link loop",
    ),
    (
        "listen-port-of-5000-digits",
        lambda t: t.replace('"127.0.0.1:3307"', '"127.0.0.1:' + "9" * 5000 + '"'),
        "appliance.listen",
        "port must be between 0 and 65535",
    ),
    (
        "array-nested-100000-deep",
        lambda t: t + "\nfoo = " + "[" * 100_000 + "]" * 100_000 + "\n",
        "",
        "invalid TOML: arrays or tables nested too deeply",
    ),
    ("integer-of-5000-digits", lambda t: "foo = 1" + "0" * 5000 + "\n" + t, "", "invalid TOML"),
]


@pytest.mark.parametrize(
    ("transform", "key", "problem"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_mistake_is_named(
    confdir: Path,
    capsys: pytest.CaptureFixture[str],
    transform: Callable[[str], str],
    key: str,
    problem: str,
) -> None:
    check_fails(confdir, transform(MINIMAL), key, problem, capsys)


def test_toml_syntax_error_names_the_line(
    confdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = MINIMAL.replace('name = "edge-1"', 'name = "edge-1\n')  # unterminated string
    line = MINIMAL.splitlines().index('name = "edge-1"') + 1
    error = check_fails(confdir, text, "", "invalid TOML", capsys)
    assert f"line {line}" in error.problem


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == ""
    assert str(info.value) == f"{path}: cannot read the file: No such file or directory"
    assert main(["check", "-c", str(path)]) == 2
    assert capsys.readouterr().err == f"sqlgate: {info.value}\n"


def test_config_error_str_is_file_key_problem() -> None:
    error = ConfigError("/etc/sqlgate.toml", "targets[1].password_file", "cannot read x")
    assert str(error) == "/etc/sqlgate.toml: targets[1].password_file: cannot read x"
    assert (error.key, error.problem) == ("targets[1].password_file", "cannot read x")


def test_masking_rules_by_column_and_by_content(confdir: Path) -> None:
    path = write(
        confdir,
        MINIMAL
        + """
[[masking]]
column = "shop.customers.phone"
strategy = "last4"
on_use = "rewrite"

[[masking]]
detect = ["card", "email"]
strategy = "redact"
exempt_groups = ["pii-readers"]
""",
    )
    column, content = load_config(path).masking
    assert (column.column_name, column.on_use, column.detect) == ("phone", "rewrite", ())
    assert (content.detect, content.strategy.value, content.exempt_groups) == (
        ("card", "email"),
        "redact",
        ("pii-readers",),
    )


def test_recording_section(confdir: Path) -> None:
    """Sessions are recorded by default (SPEC §10); ``enabled = false`` turns it off
    (before, a configuration without the section recorded nothing)."""
    default = load(confdir, MINIMAL).recording
    assert (default.enabled, default.max_bytes, default.max_rows, default.keep_days) == (
        True,
        65536,
        1000,
        30,
    )
    assert not load(confdir, MINIMAL + "\n[recording]\nenabled = false\n").recording.enabled
    with pytest.raises(ConfigError, match=r"recording\.enabled"):
        load(confdir, MINIMAL + '\n[recording]\nenabled = "no"\n')
    recording = load(confdir, MINIMAL + "\n[recording]\nmax_rows = 50\nkeep_days = 0\n").recording
    assert (recording.enabled, recording.max_bytes, recording.max_rows, recording.keep_days) == (
        True,
        65536,
        50,
        0,
    )
    with pytest.raises(ConfigError, match=r"recording\.max_bytes"):
        load(confdir, MINIMAL + "\n[recording]\nmax_bytes = 10\n")


# --- what `sqlgate check` loads beyond the file: keys, certificates, rule kinds -----------


def check_refuses(
    directory: Path, text: str, key: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Loading passes, but ``sqlgate check`` (and ``run``) exit 2 naming ``key``."""
    path = write(directory, text)
    load_config(path)
    for command in ("check", "run"):
        assert main([command, "-c", str(path)]) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert err.startswith(f"sqlgate: {path}: {key}: ") and err.count("\n") == 1, err
        assert problem in err, err


def check_passes(directory: Path, text: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(directory, text)
    assert main(["check", "-c", str(path)]) == 0
    assert capsys.readouterr() == (f"ok: {path}: 1 targets\n", "")


@pytest.fixture
def pki(confdir: Path) -> Path:
    """A certificate and its key (real.crt, real.key), another key, the key encrypted."""
    from cryptography.hazmat.primitives import serialization
    from lab.certs import make_pki

    made = make_pki(confdir / "pki")
    (confdir / "real.crt").write_bytes(made.server_cert.read_bytes())
    (confdir / "real.key").write_bytes(made.server_key.read_bytes())
    (confdir / "other.key").write_bytes(made.ca_key.read_bytes())  # the CA's, not the cert's
    key = serialization.load_pem_private_key(made.server_key.read_bytes(), None)
    (confdir / "locked.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return confdir


def test_check_passes_a_usable_certificate_and_key(
    pki: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    check_passes(pki, MINIMAL + '\n[tls]\ncert_file = "real.crt"\nkey_file = "real.key"\n', capsys)


@pytest.mark.parametrize(
    ("cert", "key", "bad", "problem"),
    [
        ("gateway.crt", "real.key", "tls.cert_file", "gateway.crt: not a PEM certificate"),
        ("real.key", "real.key", "tls.cert_file", "real.key: not a PEM certificate"),
        ("real.crt", "gateway.key", "tls.key_file", "gateway.key: not a PEM private key"),
        ("real.crt", "other.key", "tls.key_file", "other.key: not the key of the certificate"),
        ("real.crt", "locked.key", "tls.key_file", "locked.key: the key is encrypted"),
    ],
)
def test_check_loads_the_certificate_and_key(
    pki: Path, cert: str, key: str, bad: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    tls = f'\n[tls]\ncert_file = "{cert}"\nkey_file = "{key}"\n'
    check_refuses(pki, MINIMAL + tls, bad, problem, capsys)


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ('[bus]\nurl = "mqtts://127.0.0.1"\nca_file = "{ca}"\n', "bus.ca_file"),
        (
            '[tls]\ncert_file = "real.crt"\nkey_file = "real.key"\n\n'
            '[identity]\nissuer = "https://i"\naudience = "a"\nca_file = "{ca}"',
            "identity.ca_file",
        ),
    ],
)
def test_check_loads_the_ca_bundles(
    pki: Path, section: str, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = MINIMAL + "\n" + section.format(ca="ledger.key")
    check_refuses(pki, bad, key, "ledger.key: no PEM CA certificate in the file", capsys)
    check_passes(pki, MINIMAL + "\n" + section.format(ca="real.crt"), capsys)


def test_check_loads_the_target_ca_bundle(pki: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = MINIMAL.replace('user = "sqlgate"', 'user = "sqlgate"\ntls_ca_file = "real.key"')
    check_refuses(pki, text, "targets[0].tls_ca_file", "no PEM CA certificate", capsys)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\x00" * 32, "not a PEM private key (expected 'sqlgate keygen' output)"),
        (public_key_pem(generate_key().public_key()), "not a PEM private key"),
        (b"#" * (1024 * 1024 + 1), "ledger.key: larger than 1 MiB"),
    ],
    ids=["garbage", "public-key", "too-large"],
)
def test_check_loads_the_ledger_signing_key(
    confdir: Path, content: bytes, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (confdir / "ledger.key").write_bytes(content)
    check_refuses(confdir, MINIMAL, "ledger.signing_key", problem, capsys)


@pytest.mark.parametrize(
    ("mode", "owner", "problem"),
    [
        (0o644, 0, "is open to other users (mode 0644, owner uid 0)"),
        (0o604, 0, "is open to other users (mode 0604, owner uid 0)"),
        (0o660, 0, "is open to its group (mode 0660, owner uid 0)"),
        (0o640, 10001, "is open to its group (mode 0640, owner uid 10001): whoever can read"),
        (0o600, None, None),
        (0o400, None, None),
        (0o640, 0, None),  # root's, readable by its group: a mounted Kubernetes secret
    ],
    ids=[
        "world-readable",
        "world-only",
        "group-writable",
        "group-of-another",
        "0600",
        "0400",
        "root-0640",
    ],
)
def test_check_refuses_a_signing_key_other_users_can_read(
    confdir: Path,
    mode: int,
    owner: int | None,
    problem: str | None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Anyone who can read the signing key can re-sign a rewritten ledger so that it
    verifies; check and run accepted a key any user of the machine could read."""
    key = confdir / "ledger.key"
    if owner is not None:
        if os.geteuid() != 0 and owner != os.geteuid():
            # a test that cannot run is a red test (as the lab's fixtures): the suite
            # runs as root, as scripts/test and CI do
            pytest.fail("giving a file to another user needs root", pytrace=False)
        os.chown(key, owner, -1)
    key.chmod(mode)
    if problem is None:
        check_passes(confdir, MINIMAL, capsys)
        return
    check_refuses(confdir, MINIMAL, "ledger.signing_key", f"{key} {problem}", capsys)


IDENTITY = '\n[identity]\nissuer = "https://idp"\naudience = "sqlgate"\njwks_file = "jwks.json"\n'


def test_check_refuses_identity_without_tls(pki: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Tokens travel only inside TLS, which the gateway offers only with [tls]: without
    it no token login could ever succeed, yet check passed."""
    check_refuses(pki, MINIMAL + IDENTITY, "identity", "[identity] needs [tls]", capsys)
    check_passes(
        pki, MINIMAL + IDENTITY + '[tls]\ncert_file = "real.crt"\nkey_file = "real.key"\n', capsys
    )
    # with [approvals], [identity] also verifies the operators' tokens (over MQTT)
    approvals = '\n[bus]\nurl = "mqtt://127.0.0.1:1883"\n\n[approvals]\napprover_groups = ["dba"]\n'
    check_passes(pki, MINIMAL + IDENTITY + approvals, capsys)


def test_approvals_without_bus_use_the_default_broker(pki: Path) -> None:
    """[approvals] without [bus] runs on the default broker, as the gateway does; the
    configuration said no broker, so `approvals list` refused it ("no [bus] section"),
    `health` skipped the broker the held statements need and the image started none."""
    config = load(pki, MINIMAL + IDENTITY + '\n[approvals]\napprover_groups = ["dba"]\n')
    assert config.approvals.enabled
    assert config.bus.enabled
    assert config.bus.url == "mqtt://127.0.0.1:1883"
    assert not load(pki, MINIMAL).bus.enabled


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (b"\xce\x00garbage", "not a JWKS: not JSON"),
        (b'{"nokeys": 1}', "not a JWKS: no 'keys' array"),
        (b'{"keys": []}', "no key that can verify a token (it lists none)"),
        (
            b'{"keys": [{"kty": "oct", "kid": "s1", "k": "c2VjcmV0"}]}',
            "no key that can verify a token (1 skipped: key 's1': kty 'oct' is not an "
            "asymmetric key type)",
        ),
    ],
    ids=["garbage", "no-keys-array", "empty", "symmetric"],
)
def test_check_refuses_a_jwks_file_that_verifies_no_token(
    pki: Path, document: bytes, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A JWKS file that was only checked for being readable: check passed, and the
    gateway started and refused every token login."""
    tls = '[tls]\ncert_file = "real.crt"\nkey_file = "real.key"\n'
    check_passes(pki, MINIMAL + IDENTITY + tls, capsys)
    (pki / "jwks.json").write_bytes(document)
    jwks = pki / "jwks.json"
    check_refuses(pki, MINIMAL + IDENTITY + tls, "identity.jwks_file", f"{jwks}: {problem}", capsys)


def rule(*statements: str) -> str:
    kinds = ", ".join(f'"{s}"' for s in statements)
    return f'\n[[rules]]\nname = "r1"\nstatements = [{kinds}]\naction = "block"\n'


@pytest.mark.parametrize(
    ("statements", "index", "problem"),
    [
        (["FROBNICATE"], 0, "rule 'r1': 'FROBNICATE' is not a statement kind"),
        (["SELECT", "DELTE"], 1, "'DELTE' is not a statement kind, so the rule could never "),
        (["DELTE"], 0, "(did you mean 'DELETE'?); accepted: *, ANY, ALTER, ALTER DATABASE,"),
        (["create tab"], 0, "'CREATE TAB' is not a statement kind"),
    ],
)
def test_check_refuses_a_statement_kind_no_statement_has(
    confdir: Path,
    statements: list[str],
    index: int,
    problem: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = f"rules[0].statements[{index}]"
    check_refuses(confdir, MINIMAL + rule(*statements), key, problem, capsys)


def test_check_accepts_kinds_their_first_words_and_any(
    confdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kinds = ("*", "ANY", "select", "Drop  Table", "CREATE", "START", "DEALLOCATE PREPARE")
    # kinds the built-ins block or hold may be named too (a rule comes before them)
    kinds += ("GRANT", "TRUNCATE", "DROP DATABASE", "LOCK TABLES", "ALTER USER", "LOAD DATA")
    check_passes(confdir, MINIMAL + rule(*kinds), capsys)


def test_an_address_two_targets_resolve_to_is_routed_to_neither() -> None:
    index = routing.target_index(
        [
            (("10.0.0.5", 3306), "orders"),
            (("::ffff:10.0.0.5", 3306), "billing"),  # a name resolving to the same address
            (("10.0.0.5", 3306), "orders"),
            (("10.0.0.6", 3306), "orders"),
            (("10.0.0.6", 3306), "orders"),  # one target reached twice stays routed
        ]
    )
    assert index == {("10.0.0.6", 3306): "orders"}
