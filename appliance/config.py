"""The gateway's configuration: one TOML file read into frozen dataclasses.

``load_config`` reads the file with tomllib and validates every key before anything
starts. Rules the loader enforces, so nothing downstream has to:

- Unknown keys are errors, at the top level and inside every table; a misspelled key is
  reported as unknown (with the closest known key), never as "the real key is missing".
- Types are exact: a boolean is not an integer, an integer is accepted where seconds
  (a float) are expected, nothing else is coerced.
- Only ``[appliance]``, ``[[targets]]`` (at least one) and ``[ledger]`` are required;
  every other section and key has a default.
- Relative paths are relative to the config file's directory and are stored resolved.
- Secrets (``targets.password_file``, ``bus.password_file``) are read at load time, with
  one trailing newline stripped, and never appear in a ``repr``. Other files the gateway
  needs at start (TLS certificate and key, JWKS, signing key, CA bundles) must exist;
  ``check_files`` (``sqlgate check`` and ``run``) also loads the keys and certificates.
- The file itself is read only when it is a regular file of at most 1 MiB.
- Every problem is a ``ConfigError`` naming the file, the dotted key
  (``targets[1].password_file``) and what is wrong.
"""

from __future__ import annotations

import contextvars
import difflib
import errno
import hashlib
import ipaddress
import os
import re
import socket
import ssl
import stat
import tomllib
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from enum import Enum, StrEnum
from pathlib import Path
from typing import NoReturn, TypeVar

from appliance import routing
from appliance.mysql.auth import native_password_hash
from appliance.mysql.constants import MAX_USER_BYTES

__all__ = [
    "DEFAULT_ALGORITHMS",
    "MAX_SECRET_BYTES",
    "AccountConfig",
    "ApplianceConfig",
    "ApprovalsConfig",
    "BusConfig",
    "Config",
    "ConfigError",
    "IdentityConfig",
    "LedgerConfig",
    "MaskStrategy",
    "MaskingRuleConfig",
    "NetworkConfig",
    "RecordingConfig",
    "RuleAction",
    "RuleConfig",
    "TLSConfig",
    "TargetConfig",
    "TargetTLS",
    "check_files",
    "check_ledger_path",
    "host_problem",
    "load_config",
    "read_small_file",
]

DEFAULT_ALGORITHMS: tuple[str, ...] = (
    "RS256",
    "RS384",
    "RS512",
    "ES256",
    "ES384",
    "PS256",
    "EdDSA",
)
"""Token algorithms accepted when ``identity.algorithms`` is not set."""

_ASYMMETRIC_ALGORITHMS = frozenset(
    {
        "RS256",
        "RS384",
        "RS512",
        "ES256",
        "ES256K",
        "ES384",
        "ES512",
        "PS256",
        "PS384",
        "PS512",
        "EdDSA",
    }
)
"""Signature algorithms with a public verification key; HS* and ``none`` never qualify."""

_MIB = 1024 * 1024
DEFAULT_MAX_SESSIONS = 2000
"""``[appliance] max_sessions`` when not given: above the 1,000 idle and 400 busy sessions
the gateway is measured with, so that only a runaway meets it; a deployment sets it below
what its targets' ``max_connections`` leave after operators' and other clients' needs
(docs/deployment.md)."""
DEFAULT_MAX_PREPARED = 1024
"""``[appliance] max_prepared_per_session`` when not given: far more than an application
keeps open, and a sixteenth of the server's default max_prepared_stmt_count (16,382),
which every session of the gateway shares."""
MAX_FILE_BYTES = _MIB
"""The largest configuration (or key, or checkpoint) file read: these are small texts, and
a bound keeps a wrong path (a device, a log) from being read without end."""
MAX_SECRET_BYTES = 64 * 1024
"""A password file larger than this is not one."""
_MAX_KEY_PARTS = 64  # a.b.c...: far more than any key here has, far less than hurts
# linear: a match starts only where a word does, and a word is never given back
_DEEP_KEY = re.compile(
    r"(?<![A-Za-z0-9_-])(?:[A-Za-z0-9_-]++[ \t]*\.[ \t]*){" + str(_MAX_KEY_PARTS) + "}"
)


class ConfigError(Exception):
    """The configuration cannot be used: ``str()`` is ``"<file>: <key>: <problem>"``.

    ``key`` is the dotted path of the offending key (``appliance.listen``,
    ``targets[1].password_file``); it is empty for problems with the file as a whole
    (unreadable, not TOML), and then ``str()`` is ``"<file>: <problem>"``.
    """

    def __init__(self, path: str | os.PathLike[str], key: str, problem: str) -> None:
        self.path = os.fspath(path)
        self.key = key
        self.problem = problem
        super().__init__(self.path, key, problem)

    def __str__(self) -> str:
        if self.key:
            return f"{self.path}: {self.key}: {self.problem}"
        return f"{self.path}: {self.problem}"


class TargetTLS(StrEnum):
    """How the gateway's upstream connection to a target uses TLS."""

    PREFERRED = "preferred"  # TLS when the server offers it, plain otherwise
    REQUIRED = "required"  # refuse to connect without TLS
    DISABLED = "disabled"  # never TLS


class RuleAction(StrEnum):
    """What a matching ``[[rules]]`` entry does with a statement."""

    ALLOW = "allow"
    BLOCK = "block"
    REVIEW = "review"


class PolicyMode(StrEnum):
    """Whether the policy's refusals take effect."""

    ENFORCE = "enforce"  # refused statements never reach the target
    SHADOW = "shadow"  # decide and record, but let everything run (for rollout)


class OversizedAction(StrEnum):
    """What happens to a statement text larger than ``[policy] max_statement_bytes``."""

    BLOCK = "block"  # refused: the gateway will not forward what it did not classify
    ALLOW = "allow"  # forwarded unclassified (still recorded, executable comments refused)


class MaskStrategy(StrEnum):
    """How a masked column's value is rewritten on its way to the client."""

    REDACT = "redact"  # ****
    LAST4 = "last4"  # ************1234
    HASH = "hash"  # stable, keyed digest
    NULL = "null"  # SQL NULL


@dataclass(frozen=True, slots=True)
class ApplianceConfig:
    """``[appliance]``: who this gateway is and where it listens."""

    name: str
    listen: str
    listen_host: str  # without brackets: "0.0.0.0", "::"
    listen_port: int  # 0 lets the system pick (tests)
    default_target: str  # always names a configured target
    state_dir: Path
    max_packet: int = 64 * _MIB  # largest client/server payload accepted, bytes
    drain_timeout_s: float = 30.0  # SIGTERM: how long running sessions may finish
    failed_logins_free: int = 5  # per user name and address, before each retry must wait
    failed_login_max_wait_s: float = 300.0  # the wait doubles up to this
    max_pending_logins: int = 16  # per client address; more connections wait their turn
    max_sessions: int = DEFAULT_MAX_SESSIONS
    """Client connections the gateway serves at once, from every address together: each
    opens one of a target's connections, so without it a fleet of agents could take
    all of a target's ``max_connections``; beyond it a connection is refused (1040)."""
    max_prepared_per_session: int = DEFAULT_MAX_PREPARED
    """Statements one session may hold prepared on its target (COM_STMT_PREPARE and
    SQL-level PREPARE together): all sessions share the server's max_prepared_stmt_count,
    which one that never closes its statements would otherwise exhaust for every other."""
    max_buffered: int = 512 * _MIB
    """What all sessions together may hold of their clients' commands not yet decided
    (unfinished packets, commands waiting for a decision), bytes: each may hold up to
    ``max_packet``, so without it a few sessions each sending most of a 64 MiB packet
    took the gateway's memory by 60 MiB each."""


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """``[tls]``: the certificate the gateway presents to clients."""

    cert_file: Path
    key_file: Path


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    """``[identity]``: how OIDC tokens presented as passwords are verified."""

    issuer: str
    audience: str
    jwks_file: Path | None  # at most one of jwks_file and jwks_url is set;
    jwks_url: str | None  # neither: the issuer's discovery document names the JWKS
    groups_claim: str = "groups"
    username_claim: str = "email"
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    leeway_s: float = 30.0
    max_lifetime_s: float = 86400.0
    max_token_bytes: int = 16384  # larger passwords are refused before any parsing
    ca_file: Path | None = None  # CA bundle for the identity provider's HTTPS; None: system CAs


@dataclass(frozen=True, slots=True)
class AccountConfig:
    """``[[accounts]]``: a gateway account for clients that cannot present a token."""

    user: str
    password_hash: str = field(repr=False)  # "*" + 40 upper-case hex digits, as MySQL prints it
    stage2: bytes = field(repr=False)  # SHA1(SHA1(password)), the 20 bytes of the hash
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TargetConfig:
    """``[[targets]]``: a database the gateway fronts, with its vaulted credential."""

    name: str
    host: str  # IP literal (IPv6 without brackets) or host name
    port: int
    user: str
    password_file: Path
    password: bytes = field(repr=False)  # the file's bytes minus one trailing newline
    allow_groups: tuple[str, ...] = ()
    tls: TargetTLS = TargetTLS.PREFERRED
    tls_verify: bool = False
    tls_ca_file: Path | None = None
    connect_timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class LedgerConfig:
    """``[ledger]``: the signed SQLite audit ledger."""

    path: Path
    signing_key: Path
    fsync: bool = False


@dataclass(frozen=True, slots=True)
class BusConfig:
    """``[bus]``: the MQTT broker for approvals and live events."""

    url: str = "mqtt://127.0.0.1:1883"
    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False  # mqtts://
    topic_prefix: str = "sqlgate"
    username: str | None = None
    password_file: Path | None = None
    password: bytes | None = field(default=None, repr=False)
    enabled: bool = False  # [bus] or [approvals] is present: the broker is used
    ca_file: Path | None = None  # CA for an mqtts:// broker (else the system's)

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS settings of an ``mqtts://`` broker (certificate and name checked)."""
        if not self.tls:
            return None
        return ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file is not None else None
        )


@dataclass(frozen=True, slots=True)
class ApprovalsConfig:
    """``[approvals]``: who may decide held statements, and how long they wait."""

    timeout_s: float = 120.0
    approver_groups: tuple[str, ...] = ("dba",)
    enabled: bool = False  # the section is present: review statements are held, not refused


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """``[policy]``: how statements are decided, and the runaway-agent guard."""

    mode: PolicyMode = PolicyMode.ENFORCE
    max_statement_bytes: int = 1024 * 1024
    oversized: OversizedAction = OversizedAction.BLOCK
    statements_per_second: int = 0  # per identity; 0: no limit
    rows_changed_per_minute: int = 0  # per identity; 0: no limit
    sessions_per_identity: int = 0  # open sessions of one identity on one target; 0: no limit
    masking_key_file: Path | None = None  # the key of the `hash` strategy; None: state_dir
    # how often the targets' views (masking) and views, foreign keys and triggers (refusing
    # rules with tables) are read again: the longest one made outside the gateway stays
    # unknown
    views_refresh_s: float = 60.0


@dataclass(frozen=True, slots=True)
class RuleConfig:
    """``[[rules]]``: evaluated in order before the built-in rules; first match wins.

    ``statements`` are upper-cased with single spaces ("ALTER TABLE"). ``None`` in a
    filter means "any"; a filter that is set is never empty.
    """

    name: str
    statements: tuple[str, ...]
    action: RuleAction
    tables: tuple[str, ...] | None = None
    groups: tuple[str, ...] | None = None
    identities: tuple[str, ...] | None = None
    targets: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class MaskingRuleConfig:
    """``[[masking]]``: a column pattern, how to mask it, and who sees the real value."""

    column: str  # "schema.table.column" as written ("" for a content rule)
    schema: str  # each part is a name or a pattern where '*' matches anything
    table: str
    column_name: str
    strategy: MaskStrategy
    exempt_groups: tuple[str, ...] = ()
    detect: tuple[str, ...] = ()  # a content rule: detectors run on every column
    on_use: str = "refuse"  # a use other than a plain projection: "refuse" or "rewrite"


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """``[network]``: the interception rules ``sqlgate net`` installs."""

    manage_rules: bool = False
    interfaces: tuple[str, ...] | None = None  # None: found from the routing table
    mark: int = 0x5147  # firewall mark of the proxy's own upstream sockets
    # a clean stop leaves the rules in place (fail closed until the gateway is back)
    keep_rules_on_stop: bool = False
    # targets given by host name are looked up again this often (failover moves them)
    resolve_interval_s: float = 30.0


@dataclass(frozen=True, slots=True)
class RecordingConfig:
    """``[recording]``: what came back for each statement, as the agent saw it."""

    enabled: bool = True  # on unless ``enabled = false``
    max_bytes: int = 64 * 1024  # per statement: the answer's bytes kept
    max_rows: int = 1000  # per statement: rows kept (over all its result sets)
    keep_days: int = 30  # recordings older than this are purged (0: kept forever)


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration."""

    path: Path  # the file, resolved
    sha256: str  # hex digest of the file's bytes
    appliance: ApplianceConfig
    targets: tuple[TargetConfig, ...]
    ledger: LedgerConfig
    tls: TLSConfig | None = None
    identity: IdentityConfig | None = None
    accounts: tuple[AccountConfig, ...] = ()
    bus: BusConfig = field(default_factory=BusConfig)
    approvals: ApprovalsConfig = field(default_factory=ApprovalsConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    rules: tuple[RuleConfig, ...] = ()
    masking: tuple[MaskingRuleConfig, ...] = ()
    network: NetworkConfig = field(default_factory=NetworkConfig)
    recording: RecordingConfig = field(default_factory=RecordingConfig)

    def target(self, name: str) -> TargetConfig:
        """The target called ``name``; ``KeyError`` when there is none."""
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(name)

    def account(self, user: str) -> AccountConfig | None:
        """The gateway account for ``user``, or ``None``."""
        for account in self.accounts:
            if account.user == user:
                return account
        return None


_FOR_OPERATOR: contextvars.ContextVar[bool] = contextvars.ContextVar("for_operator", default=False)


def load_config(path: str | os.PathLike[str], *, operator: bool = False) -> Config:
    """Read and validate the configuration file at ``path``; raise ``ConfigError``.

    ``operator``: for the operator's commands (the console, ``sqlgate approvals``) on a
    desk that has the gateway's configuration but not its secrets: the targets'
    password files, the TLS and ledger keys, the masking key are named, not read
    (``password`` is empty), so they need not be there.
    """
    token = _FOR_OPERATOR.set(operator)
    try:
        return _load_config(path)
    finally:
        _FOR_OPERATOR.reset(token)


def _load_config(path: str | os.PathLike[str]) -> Config:
    if not os.fspath(path):
        raise ConfigError("-c", "", "the configuration file's name is empty")
    file = Path(path)
    try:
        data = read_small_file(file)
    except (OSError, ValueError) as exc:
        why = _os_reason(exc) if isinstance(exc, OSError) else str(exc)
        raise ConfigError(path, "", f"cannot read the file: {why}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, "", f"not UTF-8 text (byte {exc.start})") from None
    deep = _DEEP_KEY.search(text)
    if deep is not None:  # the TOML parser takes time quadratic in a dotted key's parts
        line = text.count("\n", 0, deep.start()) + 1
        raise ConfigError(
            path,
            "",
            f"invalid TOML: a dotted key of more than {_MAX_KEY_PARTS} parts (line {line})",
        )
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"invalid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(path, "", "invalid TOML: arrays or tables nested too deeply") from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise ConfigError(path, "", f"invalid TOML: {str(exc).split(';')[0]}") from None
    resolved = file.resolve()
    try:
        return _build(raw, resolved, hashlib.sha256(data).hexdigest())
    except _Invalid as exc:
        raise ConfigError(path, exc.key, exc.problem) from None


def read_small_file(path: str | os.PathLike[str], limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file at ``path``, at most ``limit`` of them.

    OSError when the system refuses (IsADirectoryError for a directory); ValueError
    ("not a regular file", "larger than ...") for a device, a FIFO or a socket, which is
    never opened (a FIFO would block, a device never end), or for a file over ``limit``.
    """
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(path))
    if not stat.S_ISREG(mode):
        raise ValueError("not a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # swapped for a FIFO?
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        size = f"{limit // _MIB} MiB" if limit % _MIB == 0 else f"{limit} bytes"
        raise ValueError(f"larger than {size}")
    return data


def secret_exposure(path: str | os.PathLike[str]) -> str | None:
    """Why the secret file at ``path`` is open to other users, or None when it is not.

    Whoever can read the ledger signing key can sign a rewritten ledger that verifies,
    so, as ssh and PostgreSQL do for their keys, the file must be its owner's alone
    (0600 or stricter); a file owned by root may also be readable by its group (0640, a
    Kubernetes secret mounted with an ``fsGroup``). A file this user can read although
    another user owns it is open to its group or to everyone, so it is refused too.
    OSError when the file cannot be looked at.
    """
    st = os.stat(path)  # a symlink (a mounted secret) counts for what it points to
    mode = stat.S_IMODE(st.st_mode)
    allowed = 0o040 if st.st_uid == 0 else 0
    if not mode & 0o077 & ~allowed:
        return None
    who = "other users" if mode & 0o007 else "its group"
    fix = "chmod 600 it" if st.st_uid != 0 else "chmod 600 it (640 is accepted when root owns it)"
    return (
        f"{os.fspath(path)} is open to {who} (mode {mode:04o}, owner uid {st.st_uid}): "
        f"whoever can read the signing key can sign a forged ledger; {fix}"
    )


def check_files(config: Config) -> None:
    """Load what the gateway loads at start beyond ``load_config``: the TLS certificate
    and key, the CA bundles, the JWKS file, the masking key and the ledger signing key
    (ConfigError naming the key); and ``[identity]`` only with the ``[tls]`` its token
    logins need.

    ``sqlgate check`` and ``sqlgate run`` call it; the operator's commands (approvals,
    console, health) do not, as a desk's copy of the file need not hold the secret key.
    """
    from appliance.ledger.chain import LedgerError, load_private_key

    def fail(key: str, problem: str) -> NoReturn:
        raise ConfigError(config.path, key, problem)

    if config.tls is not None:
        cert, key = config.tls.cert_file, config.tls.key_file
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert)
        except ssl.SSLError:
            fail("tls.cert_file", f"{cert}: not a PEM certificate")
        asked: list[bool] = []

        def password() -> bytes:  # never a prompt on the terminal
            asked.append(True)
            return b""

        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password)
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                fail("tls.key_file", f"{key}: not the key of the certificate in {cert}")
            if asked:
                fail("tls.key_file", f"{key}: the key is encrypted; sqlgate needs it unencrypted")
            fail("tls.key_file", f"{key}: not a PEM private key")
    if config.identity is not None and config.identity.jwks_file is not None:
        from appliance.identity import jwks_problem

        jwks = config.identity.jwks_file  # read whole at start and whenever it changes
        try:
            document = read_small_file(jwks)
        except (OSError, ValueError) as exc:
            why = _os_reason(exc) if isinstance(exc, OSError) else str(exc)
            fail("identity.jwks_file", f"cannot read {jwks}: {why}")
        problem = jwks_problem(document)
        if problem is not None:
            fail("identity.jwks_file", f"{jwks}: {problem}")
    bundles = [(f"targets[{i}].tls_ca_file", t.tls_ca_file) for i, t in enumerate(config.targets)]
    if config.identity is not None:
        bundles.append(("identity.ca_file", config.identity.ca_file))
    bundles.append(("bus.ca_file", config.bus.ca_file))
    for name, bundle in bundles:
        if bundle is not None:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=bundle)
            except ssl.SSLError:
                fail(name, f"{bundle}: no PEM CA certificate in the file")
    if config.masking:  # the gateway loads (or makes) the hash strategy's key at start
        _check_masking_key(config, fail)
    signing_key = config.ledger.signing_key
    try:
        read_small_file(signing_key)  # the loader reads the whole file
        load_private_key(signing_key)
        exposed = secret_exposure(signing_key)
    except (OSError, ValueError) as exc:
        why = _os_reason(exc) if isinstance(exc, OSError) else str(exc)
        fail("ledger.signing_key", f"cannot read {signing_key}: {why}")
    except LedgerError as exc:
        fail("ledger.signing_key", str(exc))
    if exposed is not None:
        fail("ledger.signing_key", exposed)
    if config.identity is not None and config.tls is None and not config.approvals.enabled:
        # (with [approvals], [identity] also verifies the operators' tokens, over MQTT)
        fail(
            "identity",
            "[identity] needs [tls] (cert_file, key_file): a client's token is accepted as "
            "its password only over TLS, and without [tls] the gateway offers clients no "
            "TLS, so no token login could succeed. Add [tls], or remove [identity] and "
            "log in with [[accounts]]",
        )


def check_ledger_path(config: Config) -> None:
    """``ledger.path`` names a file the ledger can be made in or opened as: not a
    directory or another kind of file, in a directory that exists (the file itself is
    made at the first start). ConfigError naming the key if not.

    Only ``sqlgate check`` asks: ``run`` starts whatever the ledger's state, refusing
    statements (1105) until the ledger can be written, and recovers by itself then.
    """
    path = config.ledger.path

    def fail(problem: str) -> NoReturn:
        raise ConfigError(config.path, "ledger.path", problem)

    try:
        mode: int | None = path.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:  # ENOTDIR: a regular file where a directory should be
        if exc.errno != errno.ENOTDIR:
            fail(f"cannot use {path}: {_os_reason(exc)}")
        mode = None
    if mode is not None:
        if stat.S_ISDIR(mode):
            fail(f"{path} is a directory: name the ledger's file, such as {path / 'ledger.db'}")
        if not stat.S_ISREG(mode):
            fail(f"{path}: not a regular file")
        return
    parent = path.parent
    try:
        parent_mode = parent.stat().st_mode
    except FileNotFoundError:
        fail(f"{parent}: no such directory, so the ledger cannot be made there")
    except OSError as exc:
        if exc.errno != errno.ENOTDIR:
            fail(f"cannot use {parent}: {_os_reason(exc)}")
        parent_mode = 0
    if not stat.S_ISDIR(parent_mode):
        fail(f"{parent}: not a directory, so the ledger cannot be made there")


def _check_masking_key(config: Config, fail: Callable[[str, str], NoReturn]) -> None:
    """``[policy] masking_key_file`` readable and 16 bytes or more; without it, the key
    ``state_dir/masking.key`` made at the first start must be possible (or be there)."""
    path = config.policy.masking_key_file
    key = "policy.masking_key_file"
    if path is None:
        key = "appliance.state_dir"
        state = config.appliance.state_dir
        path = state / "masking.key"
        if not path.exists():
            near = state
            while not near.exists() and near != near.parent:
                near = near.parent
            if not near.is_dir():
                fail(key, f"{state}: not a directory, so the masking key cannot be kept there")
            if not os.access(near, os.W_OK | os.X_OK):
                fail(key, f"{near}: not writable, so the masking key cannot be made there")
            return
    try:
        data = read_small_file(path)
    except (OSError, ValueError) as exc:  # ValueError: not a regular file, over 1 MiB
        why = _os_reason(exc) if isinstance(exc, OSError) else str(exc)
        fail(key, f"cannot read the masking key {path}: {why}")
    if len(data) < 16:
        fail(key, f"{path}: a masking key needs at least 16 bytes, it has {len(data)}")


# --- validation -------------------------------------------------------------------------


class _Invalid(Exception):
    """A problem at a key; ``load_config`` adds the file name."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(key, problem)
        self.key = key
        self.problem = problem


class _Missing(Enum):
    MISSING = "missing"


_MISSING = _Missing.MISSING
_E = TypeVar("_E", bound=StrEnum)

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HOST_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_HASH_RE = re.compile(r"\*[0-9A-Fa-f]{40}")


def _describe(value: object) -> str:
    """The TOML name of ``value``'s type, for "expected X, got Y" messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime):
        return "a date-time"
    if isinstance(value, date):
        return "a date"
    if isinstance(value, time):
        return "a time"
    return type(value).__name__


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    return exc.strerror or str(exc)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class _Table:
    """One TOML table being validated: typed getters that name the key on error.

    The set of known keys is given up front, so an unknown (say, misspelled) key is
    reported before the key it was meant to be is found missing.
    """

    def __init__(
        self, raw: Mapping[str, object], prefix: str, known: Iterable[str], base: Path
    ) -> None:
        self.raw = raw
        self.prefix = prefix
        self.base = base
        known = tuple(known)
        for name in raw:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hints = [f"did you mean '{close[0]}'?"] if close else []
                elsewhere = _sections_knowing(name)
                if elsewhere:
                    hints.append(f"{name} is a key of {elsewhere}: move it there")
                hint = f" ({' '.join(hints)})" if hints else ""
                allowed = ", ".join(known)
                raise _Invalid(self.key(name), f"unknown key{hint}; known keys: {allowed}")

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def has(self, name: str) -> bool:
        return name in self.raw

    def _get(self, name: str, default: object) -> object:
        if name in self.raw:
            return self.raw[name]
        if default is _MISSING:
            raise _Invalid(self.key(name), "required key is missing")
        return default

    def string(self, name: str, default: str | _Missing = _MISSING) -> str:
        value = self._get(name, default)
        if not isinstance(value, str):
            raise _Invalid(self.key(name), f"expected a string, got {_describe(value)}")
        if not value.strip():
            raise _Invalid(self.key(name), "must not be empty")
        return value

    def optional_string(self, name: str) -> str | None:
        return self.string(name) if self.has(name) else None

    def integer(self, name: str, default: int | _Missing, lo: int, hi: int) -> int:
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(self.key(name), f"expected an integer, got {_describe(value)}")
        if not lo <= value <= hi:
            raise _Invalid(self.key(name), f"must be between {lo} and {hi}, got {value}")
        return value

    def seconds(self, name: str, default: float, lo: float, hi: float) -> float:
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            problem = f"expected a number of seconds, got {_describe(value)}"
            raise _Invalid(self.key(name), problem)
        if not lo <= value <= hi:
            problem = f"must be between {_number(lo)} and {_number(hi)} seconds, got {value}"
            raise _Invalid(self.key(name), problem)
        return float(value)

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name, default)
        if not isinstance(value, bool):
            problem = f"expected a boolean (true or false), got {_describe(value)}"
            raise _Invalid(self.key(name), problem)
        return value

    def strings(self, name: str, default: tuple[str, ...] | _Missing = _MISSING) -> tuple[str, ...]:
        value = self._get(name, default)
        if isinstance(value, tuple):
            return value
        if not isinstance(value, list):
            problem = f"expected an array of strings, got {_describe(value)}"
            raise _Invalid(self.key(name), problem)
        items: list[str] = []
        for index, item in enumerate(value):
            item_key = f"{self.key(name)}[{index}]"
            if not isinstance(item, str):
                raise _Invalid(item_key, f"expected a string, got {_describe(item)}")
            if not item.strip():
                raise _Invalid(item_key, "must not be empty")
            items.append(item)
        return tuple(items)

    def optional_strings(self, name: str) -> tuple[str, ...] | None:
        """A filter list: absent means "any", present must not be empty."""
        if not self.has(name):
            return None
        items = self.strings(name)
        if not items:
            raise _Invalid(self.key(name), "must not be empty (leave the key out to match any)")
        return items

    def choice(self, name: str, kind: type[_E], default: _E | _Missing = _MISSING) -> _E:
        value = self._get(name, default)
        if isinstance(value, kind):
            return value
        if not isinstance(value, str):
            raise _Invalid(self.key(name), f"expected a string, got {_describe(value)}")
        try:
            return kind(value)
        except ValueError:
            allowed = ", ".join(member.value for member in kind)
            raise _Invalid(self.key(name), f"expected one of {allowed}, got '{value}'") from None

    def path(self, name: str, default: str | _Missing = _MISSING) -> Path:
        """A path, resolved against the config file's directory."""
        value = self.string(name, default)
        if "\0" in value:
            raise _Invalid(self.key(name), "a path cannot contain a NUL character (\\u0000)")
        try:
            return (self.base / value).resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symbolic link loop
            why = _os_reason(exc) if isinstance(exc, OSError) else "a symbolic link loop"
            raise _Invalid(self.key(name), f"cannot resolve {value}: {why}") from None

    def optional_path(self, name: str) -> Path | None:
        return self.path(name) if self.has(name) else None

    def existing_file(self, name: str) -> Path:
        """A path that must name a readable regular file now."""
        path = self.path(name)
        _check_readable(self.key(name), path)
        return path

    def optional_existing_file(self, name: str) -> Path | None:
        return self.existing_file(name) if self.has(name) else None

    def gateway_file(self, name: str) -> Path:
        """A file only the gateway reads (a key, a certificate): checked like
        ``existing_file``, except for an operator's commands, which never open it."""
        return self.path(name) if _FOR_OPERATOR.get() else self.existing_file(name)

    def optional_gateway_file(self, name: str) -> Path | None:
        return self.gateway_file(name) if self.has(name) else None

    def gateway_secret(self, name: str) -> tuple[Path, bytes]:
        """``secret`` for a secret only the gateway uses (a target's vaulted password):
        an operator's commands get its path and no bytes, and need no copy of it."""
        return (self.path(name), b"") if _FOR_OPERATOR.get() else self.secret(name)

    def secret(self, name: str) -> tuple[Path, bytes]:
        """A file holding a secret: its path and its bytes minus one trailing newline."""
        path = self.path(name)
        _check_readable(self.key(name), path)
        try:
            data = read_small_file(path, MAX_SECRET_BYTES)
        except OSError as exc:
            raise _Invalid(self.key(name), f"cannot read {path}: {_os_reason(exc)}") from None
        except ValueError as exc:
            raise _Invalid(self.key(name), f"{path}: {exc}: not a password") from None
        if data.endswith(b"\r\n"):
            data = data[:-2]
        elif data.endswith(b"\n"):
            data = data[:-1]
        if not data:
            raise _Invalid(self.key(name), f"{path} is empty: it must hold the password")
        return path, data


def _check_readable(key: str, path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise _Invalid(key, f"cannot read {path}: {_os_reason(exc)}") from None
    if stat.S_ISDIR(mode):
        raise _Invalid(key, f"cannot read {path}: is a directory")
    if not stat.S_ISREG(mode):
        raise _Invalid(key, f"cannot read {path}: not a regular file")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise _Invalid(key, f"cannot read {path}: {_os_reason(exc)}") from None


def _section(raw: Mapping[str, object], name: str) -> Mapping[str, object] | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _Invalid(name, f"expected a table ([{name}]), got {_describe(value)}")
    return value


def _array_of_tables(raw: Mapping[str, object], name: str) -> list[Mapping[str, object]]:
    value = raw.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        problem = f"expected an array of tables ([[{name}]]), got {_describe(value)}"
        raise _Invalid(name, problem)
    tables: list[Mapping[str, object]] = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise _Invalid(f"{name}[{index}]", f"expected a table, got {_describe(item)}")
        tables.append(item)
    return tables


def _check_name(key: str, value: str, what: str) -> str:
    if not _NAME_RE.fullmatch(value):
        problem = (
            f"'{value}' is not a valid {what}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
        raise _Invalid(key, problem)
    return value


def _split_url(key: str, url: str, example: str = "") -> urllib.parse.SplitResult:
    try:
        return urllib.parse.urlsplit(url)
    except ValueError as exc:  # "Invalid IPv6 URL" for an unclosed '['
        hint = f": {example}" if example else ""
        raise _Invalid(key, f"'{url}' is not a valid URL ({exc}){hint}") from None


def _parse_listen(key: str, value: str) -> tuple[str, int]:
    """``HOST:PORT`` where HOST is an IPv4 literal or a bracketed IPv6 literal."""
    example = "expected IP:PORT such as 0.0.0.0:3307 or [::]:3307"
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or value[end + 1 : end + 2] != ":":
            raise _Invalid(key, f"'{value}': {example}")
        host, port_text = value[1:end], value[end + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _Invalid(key, f"'{host}' is not an IPv6 address") from None
    else:
        host, colon, port_text = value.rpartition(":")
        if not colon:
            raise _Invalid(key, f"'{value}' has no port: {example}")
        if ":" in host:
            raise _Invalid(key, f"'{value}': put an IPv6 address in brackets, as in [::]:3307")
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            problem = f"'{host}' is not an IP address: {example} (a local address, not a name)"
            raise _Invalid(key, problem) from None
    if not port_text.isdigit() or not port_text.isascii():
        raise _Invalid(key, f"'{port_text}' is not a port number: {example}")
    if len(port_text.lstrip("0")) > 5:  # int() refuses more than 4300 digits
        raise _Invalid(key, f"port must be between 0 and 65535, got {port_text[:12]}...")
    port = int(port_text)
    if port > 65535:
        raise _Invalid(key, f"port must be between 0 and 65535, got {port}")
    return host, port


def host_problem(value: str) -> str | None:
    """Why ``value`` is not an IP address or host name (None when it is one): the same
    test a target's ``host`` meets, for hosts given on a command line."""
    try:
        _parse_host("host", value)
    except _Invalid as exc:
        return exc.problem
    return None


def _parse_host(key: str, value: str) -> str:
    """An IPv4 or IPv6 literal (brackets optional) or an RFC 1123 host name."""
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(text[1:-1]))
        except ValueError:
            raise _Invalid(key, f"'{value}' is not an IPv6 address") from None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if ":" in text:
        problem = f"'{value}' is not an IP address or host name (the port has its own key)"
        raise _Invalid(key, problem)
    name = text[:-1] if text.endswith(".") else text
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_HOST_LABEL_RE.fullmatch(label) for label in labels):
        raise _Invalid(key, f"'{value}' is not an IP address or host name")
    if all(label.isdigit() for label in labels):
        raise _Invalid(key, f"'{value}' is not a valid IPv4 address")
    return name


def _default_name() -> str:
    name = socket.gethostname().split(".")[0].lower()
    return name if _NAME_RE.fullmatch(name) else "sqlgate"


_TOP_KEYS = (
    "appliance",
    "tls",
    "identity",
    "accounts",
    "targets",
    "ledger",
    "bus",
    "approvals",
    "policy",
    "rules",
    "masking",
    "network",
    "recording",
)


def _sections_knowing(name: str) -> str:
    """The sections that have a key ``name`` (``[[targets]] or [bus]``), or "": a key
    written under the wrong header (or above every header) is named where it belongs."""
    sections = (
        ("[appliance]", _APPLIANCE_KEYS),
        ("[tls]", _TLS_KEYS),
        ("[identity]", _IDENTITY_KEYS),
        ("[[accounts]]", _ACCOUNT_KEYS),
        ("[[targets]]", _TARGET_KEYS),
        ("[ledger]", _LEDGER_KEYS),
        ("[bus]", _BUS_KEYS),
        ("[approvals]", _APPROVALS_KEYS),
        ("[policy]", _POLICY_KEYS),
        ("[[rules]]", _RULE_KEYS),
        ("[[masking]]", _MASKING_KEYS),
        ("[recording]", _RECORDING_KEYS),
        ("[network]", _NETWORK_KEYS),
    )
    found = [header for header, keys in sections if name in keys]
    if len(found) <= 1:
        return "".join(found)
    return ", ".join(found[:-1]) + " or " + found[-1]


def _build(raw: Mapping[str, object], path: Path, sha256: str) -> Config:
    base = path.parent
    if not raw:  # an empty file, or one of comments: not "[appliance] is missing" alone
        raise _Invalid(
            "",
            "holds no settings: a configuration needs [appliance], [[targets]] and [ledger] "
            "(the README's Configuration has a complete example)",
        )
    _Table(raw, "", _TOP_KEYS, base)  # unknown top-level keys first
    appliance_raw = _section(raw, "appliance")
    if appliance_raw is None:
        raise _Invalid("appliance", "required section [appliance] is missing")
    target_tables = _array_of_tables(raw, "targets")
    if not target_tables:
        raise _Invalid("targets", "at least one [[targets]] table is required")
    ledger_raw = _section(raw, "ledger")
    if ledger_raw is None:
        raise _Invalid("ledger", "required section [ledger] is missing")

    appliance_table = _Table(appliance_raw, "appliance", _APPLIANCE_KEYS, base)
    appliance = _appliance(appliance_table)
    targets = _targets(target_tables, base)
    target_names = tuple(t.name for t in targets)
    appliance = replace(appliance, default_target=_default_target(appliance_table, target_names))
    tls_raw = _section(raw, "tls")
    identity_raw = _section(raw, "identity")
    bus_raw = _section(raw, "bus")
    approvals_raw = _section(raw, "approvals")
    network_raw = _section(raw, "network")
    recording_raw = _section(raw, "recording")
    policy_raw = _section(raw, "policy")
    return Config(
        path=path,
        sha256=sha256,
        appliance=appliance,
        tls=None if tls_raw is None else _tls(_Table(tls_raw, "tls", _TLS_KEYS, base)),
        identity=(
            None
            if identity_raw is None
            else _identity(_Table(identity_raw, "identity", _IDENTITY_KEYS, base))
        ),
        accounts=_accounts(_array_of_tables(raw, "accounts"), base),
        targets=targets,
        ledger=_ledger(_Table(ledger_raw, "ledger", _LEDGER_KEYS, base)),
        bus=replace(  # [approvals] alone uses the default broker: the gateway needs one
            _bus(_Table(bus_raw or {}, "bus", _BUS_KEYS, base)),
            enabled=bus_raw is not None or approvals_raw is not None,
        ),
        approvals=_approvals(
            _Table(approvals_raw or {}, "approvals", _APPROVALS_KEYS, base),
            enabled=approvals_raw is not None,
            identity=identity_raw is not None,
        ),
        policy=_policy(_Table(policy_raw or {}, "policy", _POLICY_KEYS, base)),
        rules=_rules(_array_of_tables(raw, "rules"), base, target_names),
        masking=_masking(_array_of_tables(raw, "masking"), base),
        network=_network(_Table(network_raw or {}, "network", _NETWORK_KEYS, base)),
        recording=_recording(recording_raw, base),
    )


_APPLIANCE_KEYS = (
    "name",
    "listen",
    "default_target",
    "state_dir",
    "max_packet",
    "drain_timeout_s",
    "failed_logins_free",
    "failed_login_max_wait_s",
    "max_pending_logins",
    "max_sessions",
    "max_prepared_per_session",
    "max_buffered",
)


def _appliance(t: _Table) -> ApplianceConfig:
    """Everything but ``default_target``, which ``_default_target`` fills in."""
    name = _check_name(t.key("name"), t.string("name", _default_name()), "appliance name")
    listen = t.string("listen", "0.0.0.0:3307")
    host, port = _parse_listen(t.key("listen"), listen)
    max_packet = t.integer("max_packet", 64 * _MIB, 1024, 1024 * _MIB)
    max_buffered = t.integer("max_buffered", 512 * _MIB, 1024, 1 << 40)
    if max_buffered < max_packet:
        raise _Invalid(
            t.key("max_buffered"),
            f"must be at least max_packet ({max_packet}): one session may send that much",
        )
    return ApplianceConfig(
        name=name,
        listen=listen,
        listen_host=host,
        listen_port=port,
        default_target="",
        state_dir=t.path("state_dir", "/var/lib/sqlgate"),
        max_packet=max_packet,
        drain_timeout_s=t.seconds("drain_timeout_s", 30.0, 0, 3600),
        failed_logins_free=t.integer("failed_logins_free", 5, 0, 1_000_000),
        failed_login_max_wait_s=t.seconds("failed_login_max_wait_s", 300.0, 1, 86400),
        max_pending_logins=t.integer("max_pending_logins", 16, 1, 100_000),
        max_sessions=t.integer("max_sessions", DEFAULT_MAX_SESSIONS, 1, 1_000_000),
        max_prepared_per_session=t.integer(
            "max_prepared_per_session", DEFAULT_MAX_PREPARED, 1, 1_048_576
        ),
        max_buffered=max_buffered,
    )


def _default_target(t: _Table, names: tuple[str, ...]) -> str:
    """``appliance.default_target``: optional when there is exactly one target."""
    if t.has("default_target"):
        default_target = t.string("default_target")
        if default_target not in names:
            problem = f"'{default_target}' is not a configured target (targets: {', '.join(names)})"
            raise _Invalid(t.key("default_target"), problem)
        return default_target
    if len(names) == 1:
        return names[0]
    problem = f"required when there is more than one target (one of: {', '.join(names)})"
    raise _Invalid(t.key("default_target"), problem)


_TLS_KEYS = ("cert_file", "key_file")


def _tls(t: _Table) -> TLSConfig | None:
    if not t.has("cert_file") and not t.has("key_file"):
        return None
    for name, other in (("cert_file", "key_file"), ("key_file", "cert_file")):
        if not t.has(name):
            raise _Invalid(t.key(name), f"required together with {t.key(other)}")
    return TLSConfig(cert_file=t.gateway_file("cert_file"), key_file=t.gateway_file("key_file"))


_IDENTITY_KEYS = (
    "issuer",
    "audience",
    "jwks_file",
    "jwks_url",
    "groups_claim",
    "username_claim",
    "algorithms",
    "leeway_s",
    "max_lifetime_s",
    "max_token_bytes",
    "ca_file",
)


def _identity(t: _Table) -> IdentityConfig:
    issuer = t.string("issuer")
    audience = t.string("audience")
    if t.has("jwks_file") and t.has("jwks_url"):
        raise _Invalid(t.key("jwks_url"), "set either identity.jwks_file or jwks_url, not both")
    jwks_url = t.optional_string("jwks_url")
    if jwks_url is not None:
        parts = _split_url(t.key("jwks_url"), jwks_url)
        if parts.scheme != "https" or not parts.hostname:
            raise _Invalid(t.key("jwks_url"), f"'{jwks_url}' is not an https:// URL")
    if not t.has("jwks_file") and jwks_url is None:
        parts = _split_url(t.key("issuer"), issuer)
        if parts.scheme != "https" or not parts.hostname:
            problem = (
                f"'{issuer}' is not an https:// URL, so its discovery document cannot be "
                "fetched: set identity.jwks_file or identity.jwks_url"
            )
            raise _Invalid(t.key("issuer"), problem)
    algorithms = t.strings("algorithms", DEFAULT_ALGORITHMS)
    if not algorithms:
        raise _Invalid(t.key("algorithms"), "must name at least one algorithm")
    for index, algorithm in enumerate(algorithms):
        if algorithm not in _ASYMMETRIC_ALGORITHMS:
            allowed = ", ".join(sorted(_ASYMMETRIC_ALGORITHMS))
            problem = (
                f"'{algorithm}' is not allowed: only asymmetric signature algorithms ({allowed})"
            )
            raise _Invalid(f"{t.key('algorithms')}[{index}]", problem)
    return IdentityConfig(
        issuer=issuer,
        audience=audience,
        jwks_file=t.optional_existing_file("jwks_file"),
        jwks_url=jwks_url,
        groups_claim=t.string("groups_claim", "groups"),
        username_claim=t.string("username_claim", "email"),
        algorithms=algorithms,
        leeway_s=t.seconds("leeway_s", 30.0, 0, 600),
        max_lifetime_s=t.seconds("max_lifetime_s", 86400.0, 1, 30 * 86400),
        max_token_bytes=t.integer("max_token_bytes", 16384, 1024, 65536),
        ca_file=t.optional_existing_file("ca_file"),
    )


_ACCOUNT_KEYS = ("user", "password_hash", "groups")


def _accounts(tables: list[Mapping[str, object]], base: Path) -> tuple[AccountConfig, ...]:
    accounts: list[AccountConfig] = []
    seen: dict[str, str] = {}
    for index, raw in enumerate(tables):
        t = _Table(raw, f"accounts[{index}]", _ACCOUNT_KEYS, base)
        user = t.string("user")
        size = len(user.encode())
        if size > MAX_USER_BYTES:
            problem = (
                f"'{user[:32]}...' is {size} bytes in UTF-8, more than the {MAX_USER_BYTES} "
                "a login's user name may have, so it could never log in"
            )
            raise _Invalid(t.key("user"), problem)
        if "\0" in user:
            problem = "a user name cannot contain a NUL character (\\u0000): it ends the name"
            raise _Invalid(t.key("user"), problem + " in a login, so it could never log in")
        if user in seen:
            raise _Invalid(t.key("user"), f"duplicate account '{user}' (also {seen[user]})")
        seen[user] = t.prefix
        password_hash = t.string("password_hash")
        if not _HASH_RE.fullmatch(password_hash):
            problem = (
                "expected '*' followed by 40 hex digits (the mysql_native_password hash of "
                "the password, which 'sqlgate account hash' prints)"
            )
            raise _Invalid(t.key("password_hash"), problem)
        if password_hash.upper() == native_password_hash(b""):
            problem = (
                "is the hash of the empty password: anyone could log in as this account "
                "without one; give it a password (sqlgate account hash)"
            )
            raise _Invalid(t.key("password_hash"), problem)
        accounts.append(
            AccountConfig(
                user=user,
                password_hash=password_hash.upper(),
                stage2=bytes.fromhex(password_hash[1:]),
                groups=t.strings("groups", ()),
            )
        )
    return tuple(accounts)


_TARGET_KEYS = (
    "name",
    "host",
    "port",
    "user",
    "password_file",
    "allow_groups",
    "tls",
    "tls_verify",
    "tls_ca_file",
    "connect_timeout_s",
)


def _targets(tables: list[Mapping[str, object]], base: Path) -> tuple[TargetConfig, ...]:
    targets: list[TargetConfig] = []
    seen: dict[str, str] = {}
    addresses: dict[tuple[str, int], str] = {}  # as routing compares them -> "targets[i] (name)"
    for index, raw in enumerate(tables):
        t = _Table(raw, f"targets[{index}]", _TARGET_KEYS, base)
        name = _check_name(t.key("name"), t.string("name"), "target name")
        if name in seen:
            raise _Invalid(t.key("name"), f"duplicate target name '{name}' (also {seen[name]})")
        seen[name] = t.prefix
        written = t.string("host")
        host = _parse_host(t.key("host"), written)
        port = t.integer("port", 3306, 1, 65535)
        address = routing.normalize((host.lower(), port))
        if address in addresses:
            problem = (
                f"'{written}' port {port} is also the address of {addresses[address]}: an "
                "intercepted connection could not tell the two targets apart; give each "
                "target its own address and port"
            )
            raise _Invalid(t.key("host"), problem)
        addresses[address] = f"{t.prefix} ('{name}')"
        user = t.string("user")
        password_file, password = t.gateway_secret("password_file")
        tls = t.choice("tls", TargetTLS, TargetTLS.PREFERRED)
        tls_verify = t.boolean("tls_verify", False)
        tls_ca_file = t.optional_gateway_file("tls_ca_file")
        if tls is TargetTLS.DISABLED and (tls_verify or tls_ca_file is not None):
            offending = "tls_verify" if tls_verify else "tls_ca_file"
            raise _Invalid(t.key(offending), f'has no effect with {t.key("tls")} = "disabled"')
        if tls is TargetTLS.PREFERRED and tls_verify:
            # a server, or an impostor at its address, that offers no TLS is used in
            # plain: verifying only the servers that offer it protects nothing
            raise _Invalid(
                t.key("tls_verify"),
                f'needs {t.key("tls")} = "required": with "preferred" a server that offers no '
                "TLS (or an impostor at its address) is used in plain, unverified, and may "
                "learn the vaulted password",
            )
        targets.append(
            TargetConfig(
                name=name,
                host=host,
                port=port,
                user=user,
                password_file=password_file,
                password=password,
                allow_groups=t.strings("allow_groups", ()),
                tls=tls,
                tls_verify=tls_verify,
                tls_ca_file=tls_ca_file,
                connect_timeout_s=t.seconds("connect_timeout_s", 5.0, 0.1, 300),
            )
        )
    return tuple(targets)


_LEDGER_KEYS = ("path", "signing_key", "fsync")


def _ledger(t: _Table) -> LedgerConfig:
    return LedgerConfig(
        path=t.path("path"),
        signing_key=t.gateway_file("signing_key"),
        fsync=t.boolean("fsync", False),
    )


_BUS_KEYS = ("url", "topic_prefix", "username", "password_file", "ca_file")


def _bus(t: _Table) -> BusConfig:
    url = t.string("url", "mqtt://127.0.0.1:1883")
    example = "expected mqtt://HOST:PORT or mqtts://HOST:PORT"
    parts = _split_url(t.key("url"), url, example)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.netloc:
        raise _Invalid(t.key("url"), f"'{url}': {example}")
    if parts.username is not None or parts.password is not None:
        problem = "credentials do not belong in the URL: use bus.username and bus.password_file"
        raise _Invalid(t.key("url"), problem)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise _Invalid(t.key("url"), f"'{url}' has a path or query: {example}")
    try:
        port = parts.port
    except ValueError:
        raise _Invalid(t.key("url"), f"'{url}' has an invalid port: {example}") from None
    if port == 0:
        raise _Invalid(t.key("url"), f"'{url}' has an invalid port: {example}")
    host = _parse_host(t.key("url"), parts.hostname or "")
    secure = parts.scheme == "mqtts"
    topic_prefix = t.string("topic_prefix", "sqlgate")
    if (
        any(c in topic_prefix for c in "+#\0")
        or topic_prefix.startswith("/")
        or topic_prefix.endswith("/")
        or "//" in topic_prefix
    ):
        problem = (
            f"'{topic_prefix}' is not a usable MQTT topic prefix (no '+', '#' or empty levels)"
        )
        raise _Invalid(t.key("topic_prefix"), problem)
    username = t.optional_string("username")
    password_file: Path | None = None
    password: bytes | None = None
    if t.has("password_file"):
        if username is None:
            raise _Invalid(t.key("username"), "required together with bus.password_file")
        password_file, password = t.secret("password_file")
    ca_file = t.optional_existing_file("ca_file")
    if ca_file is not None and not secure:
        raise _Invalid(t.key("ca_file"), "only for an mqtts:// broker (bus.url is mqtt://)")
    return BusConfig(
        url=url,
        host=host,
        port=port if port is not None else (8883 if secure else 1883),
        tls=secure,
        topic_prefix=topic_prefix,
        username=username,
        password_file=password_file,
        password=password,
        ca_file=ca_file,
    )


_APPROVALS_KEYS = ("timeout_s", "approver_groups")


def _approvals(t: _Table, *, enabled: bool, identity: bool) -> ApprovalsConfig:
    approver_groups = t.strings("approver_groups", ("dba",))
    if not approver_groups:
        problem = "must name at least one group, or no held statement could ever be approved"
        raise _Invalid(t.key("approver_groups"), problem)
    timeout_s = t.seconds("timeout_s", 120.0, 1, 86400)
    if enabled and not identity:
        problem = (
            "approvals need [identity]: each decision carries the operator's token, which "
            "the gateway verifies like a client's"
        )
        raise _Invalid("approvals", problem)
    return ApprovalsConfig(timeout_s=timeout_s, approver_groups=approver_groups, enabled=enabled)


_POLICY_KEYS = (
    "mode",
    "max_statement_bytes",
    "oversized",
    "statements_per_second",
    "rows_changed_per_minute",
    "sessions_per_identity",
    "masking_key_file",
    "views_refresh_s",
)


def _policy(t: _Table) -> PolicyConfig:
    return PolicyConfig(
        mode=t.choice("mode", PolicyMode, PolicyMode.ENFORCE),
        max_statement_bytes=t.integer("max_statement_bytes", 1024 * 1024, 1024, 1 << 30),
        oversized=t.choice("oversized", OversizedAction, OversizedAction.BLOCK),
        statements_per_second=t.integer("statements_per_second", 0, 0, 1_000_000),
        rows_changed_per_minute=t.integer("rows_changed_per_minute", 0, 0, 1 << 40),
        sessions_per_identity=t.integer("sessions_per_identity", 0, 0, 1_000_000),
        masking_key_file=t.optional_gateway_file("masking_key_file"),
        views_refresh_s=t.seconds("views_refresh_s", 60.0, 1, 3600),
    )


_RULE_KEYS = ("name", "statements", "action", "tables", "groups", "identities", "targets")


def _rules(
    tables: list[Mapping[str, object]], base: Path, target_names: tuple[str, ...]
) -> tuple[RuleConfig, ...]:
    rules: list[RuleConfig] = []
    seen: dict[str, str] = {}
    for index, raw in enumerate(tables):
        t = _Table(raw, f"rules[{index}]", _RULE_KEYS, base)
        name = t.string("name")
        if name in seen:
            raise _Invalid(t.key("name"), f"duplicate rule name '{name}' (also {seen[name]})")
        seen[name] = t.prefix
        statements = t.strings("statements")
        if not statements:
            raise _Invalid(t.key("statements"), "must name at least one statement kind")
        action = t.choice("action", RuleAction)
        targets = t.optional_strings("targets")
        for i, target in enumerate(targets or ()):
            if target not in target_names:
                problem = (
                    f"'{target}' is not a configured target (targets: {', '.join(target_names)})"
                )
                raise _Invalid(f"{t.key('targets')}[{i}]", problem)
        rules.append(
            RuleConfig(
                name=name,
                statements=tuple(" ".join(s.split()).upper() for s in statements),
                action=action,
                tables=t.optional_strings("tables"),
                groups=t.optional_strings("groups"),
                identities=t.optional_strings("identities"),
                targets=targets,
            )
        )
    return tuple(rules)


_MASKING_KEYS = ("column", "detect", "strategy", "exempt_groups", "on_use")
_DETECTORS = ("card", "email")
_ON_USE = ("refuse", "rewrite")


def _masking(tables: list[Mapping[str, object]], base: Path) -> tuple[MaskingRuleConfig, ...]:
    rules: list[MaskingRuleConfig] = []
    for index, raw in enumerate(tables):
        t = _Table(raw, f"masking[{index}]", _MASKING_KEYS, base)
        detect = t.strings("detect", ())
        if detect:
            if "column" in raw or "on_use" in raw:
                problem = "a content rule (detect) applies to every column: no column or on_use"
                raise _Invalid(t.key("detect"), problem)
            for i, kind in enumerate(detect):
                if kind not in _DETECTORS:
                    problem = f"'{kind}': expected one of {', '.join(_DETECTORS)}"
                    raise _Invalid(f"{t.key('detect')}[{i}]", problem)
            rules.append(
                MaskingRuleConfig(
                    column="",
                    schema="*",
                    table="*",
                    column_name="*",
                    strategy=t.choice("strategy", MaskStrategy),
                    exempt_groups=t.strings("exempt_groups", ()),
                    detect=detect,
                )
            )
            continue
        on_use = t.string("on_use", "refuse")
        if on_use not in _ON_USE:
            raise _Invalid(t.key("on_use"), f"'{on_use}': expected refuse or rewrite")
        column = t.string("column")
        parts = column.split(".")
        if len(parts) != 3 or any(not p or p != p.strip() or "`" in p for p in parts):
            problem = (
                f"'{column}': expected schema.table.column, with '*' allowed in each part "
                "(for example shop.customers.card_number or *.*.email)"
            )
            raise _Invalid(t.key("column"), problem)
        rules.append(
            MaskingRuleConfig(
                column=column,
                schema=parts[0],
                table=parts[1],
                column_name=parts[2],
                strategy=t.choice("strategy", MaskStrategy),
                exempt_groups=t.strings("exempt_groups", ()),
                on_use=on_use,
            )
        )
    return tuple(rules)


_RECORDING_KEYS = ("enabled", "max_bytes", "max_rows", "keep_days")


def _recording(raw: Mapping[str, object] | None, base: Path) -> RecordingConfig:
    """Sessions are recorded unless ``enabled = false`` (SPEC §10: what came back is
    recorded; the section only sets the caps and the retention)."""
    if raw is None:
        return RecordingConfig()
    t = _Table(raw, "recording", _RECORDING_KEYS, base)
    return RecordingConfig(
        enabled=t.boolean("enabled", True),
        max_bytes=t.integer("max_bytes", 64 * 1024, 1024, 64 * 1024 * 1024),
        max_rows=t.integer("max_rows", 1000, 1, 10_000_000),
        keep_days=t.integer("keep_days", 30, 0, 36500),
    )


_NETWORK_KEYS = (
    "manage_rules",
    "interfaces",
    "mark",
    "keep_rules_on_stop",
    "resolve_interval_s",
)


def _network(t: _Table) -> NetworkConfig:
    interfaces = t.optional_strings("interfaces")
    for index, interface in enumerate(interfaces or ()):
        if len(interface) > 15 or any(c.isspace() or c in "/:" for c in interface):
            problem = f"'{interface}' is not an interface name"
            raise _Invalid(f"{t.key('interfaces')}[{index}]", problem)
    return NetworkConfig(
        manage_rules=t.boolean("manage_rules", False),
        interfaces=interfaces,
        mark=t.integer("mark", 0x5147, 1, 0xFFFFFFFF),
        keep_rules_on_stop=t.boolean("keep_rules_on_stop", False),
        resolve_interval_s=t.seconds("resolve_interval_s", 30.0, 0.5, 3600),
    )
