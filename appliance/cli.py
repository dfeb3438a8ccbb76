"""The ``sqlgate`` command line: ``main(argv) -> int``, argparse built in one place.

Every failure a user can cause (a bad argument, a missing or invalid file) is one line on
stderr starting with ``sqlgate:`` and a non-zero exit status, never a traceback:

- 0: success;
- 1: the command ran and found a problem, or the system refused an operation;
- 2: bad usage or an invalid configuration.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import shlex
import sys
from collections.abc import Callable
from importlib import metadata
from typing import TYPE_CHECKING, NoReturn, TypeVar

from appliance.config import (
    Config,
    ConfigError,
    check_files,
    check_ledger_path,
    host_problem,
    load_config,
    read_small_file,
)
from appliance.target_names import lookup

if TYPE_CHECKING:
    import pathlib

    from appliance.ledger.chain import Head, VerifyResult
    from netconfig.nft import LiveTable

__all__ = ["build_parser", "main"]

DEFAULT_CONFIG = "/etc/sqlgate/sqlgate.toml"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

log = logging.getLogger("sqlgate")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, ``sqlgate: <message>``, and exit 2."""

    def error(self, message: str) -> NoReturn:
        hint = f" (see '{self.prog} --help')"
        sys.stderr.write(f"sqlgate: {_one_line(message)}{hint}\n")
        raise SystemExit(2)


def _version() -> str:
    try:
        return metadata.version("sqlgate")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The whole command line of SPEC §3: one subcommand (or group) per command."""
    parser = _Parser(
        prog="sqlgate",
        description="Transparent MySQL gateway: identity, policy, approvals, masking, "
        "and a signed audit ledger.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def config_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-c",
            "--config",
            metavar="FILE",
            default=DEFAULT_CONFIG,
            help=f"configuration file (default: {DEFAULT_CONFIG})",
        )

    def ledger_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--ledger", metavar="DB", required=True, help="ledger database")

    run = commands.add_parser("run", help="run the gateway in the foreground")
    config_option(run)
    run.add_argument("-v", "--verbose", action="store_true", help="log debug messages")

    check = commands.add_parser("check", help="validate the configuration")
    config_option(check)

    health = commands.add_parser(
        "health",
        help="check that the gateway serves: listener, ledger, broker",
        description="One line per check: the listener answers with the gateway's MySQL "
        "greeting, the ledger opens read-only and its tail verifies, the [bus] broker "
        "accepts the configured credentials. Exit 0 when every check passes, 1 when one "
        "fails, 2 for an unusable configuration.",
    )
    config_option(health)
    health.add_argument(
        "--timeout",
        metavar="S",
        type=_seconds,
        default=3.0,
        help=f"seconds each check may take (default 3, at most {MAX_TIMEOUT:g})",
    )

    keygen = commands.add_parser("keygen", help="write an Ed25519 ledger signing key")
    keygen.add_argument(
        "--out", metavar="DIR", required=True, help="directory for ledger.key and ledger.pub"
    )

    account = commands.add_parser("account", help="gateway accounts")
    account_commands = account.add_subparsers(
        dest="account_command", metavar="ACTION", required=True
    )
    account_commands.add_parser(
        "hash",
        help="print the password_hash of [[accounts]] for a password",
        description="Reads the password from the terminal (asked twice), or one line of "
        "standard input, and prints the password_hash value for [[accounts]].",
    )

    net = commands.add_parser("net", help="interception rules")
    net_commands = net.add_subparsers(dest="net_command", metavar="ACTION", required=True)
    net_apply = net_commands.add_parser("apply", help="install the interception rules")
    config_option(net_apply)
    net_apply.add_argument(
        "--dry-run", action="store_true", help="print the rules as nft text, change nothing"
    )
    config_option(net_commands.add_parser("remove", help="delete the interception rules"))
    config_option(net_commands.add_parser("status", help="show the rules and their counters"))
    net_probe = net_commands.add_parser("probe", help="prove that a target is intercepted")
    net_probe.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="configuration file: without --target, each of its targets is probed",
    )
    net_probe.add_argument("--target", metavar="HOST[:PORT]", help="the address a client would use")

    ledger = commands.add_parser("ledger", help="audit ledger")
    ledger_commands = ledger.add_subparsers(dest="ledger_command", metavar="ACTION", required=True)
    verify = ledger_commands.add_parser("verify", help="verify the hash chain and signatures")
    ledger_option(verify)
    verify.add_argument("--pubkey", metavar="FILE", required=True, help="ledger.pub")
    verify.add_argument(
        "--checkpoint", metavar="HEAD", help="a head kept earlier (JSON text or a file)"
    )
    verify.add_argument(
        "--all-signed",
        action="store_true",
        help="fail unless a checkpoint signs every record (a copy taken after its gateway "
        "stopped: the last record is its shutdown checkpoint)",
    )
    ledger_option(ledger_commands.add_parser("head", help="print the latest signed checkpoint"))
    export = ledger_commands.add_parser("export", help="print records as JSON lines")
    ledger_option(export)
    export.add_argument("--session", metavar="ID", help="only this session")
    export.add_argument("--since", metavar="ISO", help="only records at or after this time")
    export.add_argument("--kind", metavar="K", help="only records of this kind")
    export.add_argument(
        "--with-results",
        action="store_true",
        help="add to each result record the answer its recording holds (an 'answer' "
        "member, outside the hashed record): for evidence bundles",
    )

    replay = commands.add_parser("replay", help="replay a recorded session")
    replay.add_argument("session", metavar="SESSION")
    ledger_option(replay)
    replay.add_argument(
        "--speed",
        metavar="X",
        type=_speed,
        default=1.0,
        help="X times faster than it happened (default 1: its own pace)",
    )
    replay.add_argument("--format", choices=("text", "json"), default="text")

    approvals = commands.add_parser("approvals", help="pending approval requests")
    approval_commands = approvals.add_subparsers(
        dest="approvals_command", metavar="ACTION", required=True
    )
    approvals_list = approval_commands.add_parser(
        "list",
        help="list pending approvals",
        description="Prints one line per pending request, oldest first: the id, the "
        "requester, appliance/target, the seconds left and the statement, cut to the line "
        "('approvals show ID' prints it whole). Nothing on standard output (and 'no "
        "pending approvals' on standard error) when there are none.",
    )
    config_option(approvals_list)
    approvals_list.add_argument(
        "--appliance", metavar="NAME", help="only this gateway ([appliance] name)"
    )
    approvals_show = approval_commands.add_parser(
        "show",
        help="print a pending request with its whole statement",
        description="Prints the request (who, where, seconds left, rule and reason, "
        "sql_sha256) and then its whole statement as the gateway sent it, line breaks "
        "kept, control characters as \\xNN and other characters that would not show as "
        "themselves (U+00A0, bidi, zero-width) as \\uNNNN, those outside ASCII named "
        "before it: what 'approvals approve ID' would approve. "
        "A statement the gateway cut (past 65,536 characters) is said to be cut.",
    )
    approvals_show.add_argument("id", metavar="ID")
    config_option(approvals_show)
    for action in ("approve", "deny"):
        look = (
            " It approves the whole statement, not the part 'approvals list' shows: read "
            "it first with 'approvals show ID'."
            if action == "approve"
            else ""
        )
        decide = approval_commands.add_parser(
            action,
            help=f"{action} a pending request",
            description="Sends the decision with the operator's token (the [bus] user of "
            "the configuration must be allowed to publish it) and waits until the gateway "
            f"accepts it: exit 0 when it did, 1 when it did not.{look}",
        )
        decide.add_argument("id", metavar="ID")
        config_option(decide)
        decide.add_argument(
            "--token-file", metavar="F", required=True, help="the operator's OIDC token"
        )
        decide.add_argument("--reason", metavar="TEXT", help="why (a denial's reaches the client)")
        if action == "approve":
            decide.add_argument(
                "--grant-minutes",
                metavar="N",
                type=int,
                default=None,
                help="also let the same shape of statement from the same identity through "
                "for N minutes (1-1440)",
            )

    tui = commands.add_parser(
        "tui",
        help="the operator console",
        description="Live sessions, approvals, alerts and the ledger, from the MQTT broker "
        "of the configuration's [bus]. Without --token-file the console is read-only.",
    )
    config_option(tui)
    tui.add_argument(
        "--token-file", metavar="F", help="the operator's OIDC token: to decide and end sessions"
    )
    tui.add_argument(
        "--recording",
        metavar="FILE",
        help="play recorded events (JSON lines: topic, payload, at) instead of the broker",
    )
    tui.add_argument(
        "--speed",
        metavar="X",
        type=_speed,
        help="with --recording: play at X times the recorded pace (default: all at once)",
    )
    return parser


MAX_TIMEOUT = 3600.0  # health --timeout, seconds
SPEEDS = (0.001, 1_000_000.0)  # replay and tui --speed: slower or faster is not a replay


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None


def _seconds(text: str) -> float:
    value = _number(text)
    if not 0 < value <= MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(
            f"'{text}' must be greater than 0 and at most {MAX_TIMEOUT:g} seconds"
        )
    return value


def _speed(text: str) -> float:
    value = _number(text)
    low, high = SPEEDS
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"'{text}' must be from {low} to {high:.0f}")
    return value


# The gateway's own loggers: ``-v`` turns on their debug messages, and only theirs.
# Libraries' debug messages carry data: aiosqlite's name every statement's parameters,
# i.e. each ledger record (statement texts) and recording (result rows) it writes.
OWN_LOGGERS = ("sqlgate", "appliance", "netconfig")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(stream=sys.stderr, format=LOG_FORMAT, level=logging.INFO)
    if verbose:
        for name in OWN_LOGGERS:
            logging.getLogger(name).setLevel(logging.DEBUG)


def _one_line(message: str) -> str:
    """``message`` with its control characters escaped (``\\n``, ``\\x1b``): a file name
    or a configured value holding a line break or a terminal escape, echoed in an error,
    must neither split the one line a script reads nor drive the terminal."""
    if message.isprintable():
        return message
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def _fail(message: str, status: int = 2) -> int:
    sys.stderr.write(f"sqlgate: {_one_line(message)}\n")
    return status


def _print(text: str, *, end: str = "\n", flush: bool = False) -> None:
    """``print`` for a command's output: when the reader has gone (``| head -1``,
    ``| grep -q``), the rest of the output goes nowhere and the command carries on to its
    own exit status, with no error about the pipe."""
    if sys.stdout is None:  # started with standard output closed
        return
    try:
        sys.stdout.write(text + end)
        if flush:
            sys.stdout.flush()
    except BrokenPipeError:
        _drop_stdout()


def _drop_stdout() -> None:
    """Point standard output at /dev/null: what is still buffered, and what is written
    later, is dropped there instead of failing (at exit, as "Exception ignored")."""
    import os

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _flush_stdout() -> None:
    """Flush standard output before exit, the reader being gone or not."""
    if sys.stdout is None:
        return
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _drop_stdout()
    except (OSError, ValueError):  # closed, or a full disk: nothing more to do about it
        pass


def _load(path: str, *, starting: bool = False, operator: bool = False) -> Config | int:
    """The configuration, or the exit status after reporting why it cannot be used.

    ``starting`` (check, run): also load the files the gateway loads at start and check
    the rules' statement kinds, so that what ``check`` passes, ``run`` can use.
    ``operator`` (the console, approvals): the gateway's secrets need not be there.
    """
    try:
        config = load_config(path, operator=operator)
        if starting:
            check_files(config)
            _check_rule_kinds(config)
        return config
    except ConfigError as exc:
        return _fail(str(exc))  # "<file>: <key>: <problem>" names the file first


def _check_rule_kinds(config: Config) -> None:
    """Every ``[[rules]] statements`` entry names a kind a statement can have.

    Here rather than in appliance.config: the kinds live in the policy, which imports
    the configuration. A rule matches a kind equal to an entry or starting with it and a
    space ("DROP" matches "DROP TABLE"), so the first words of a kind are accepted too.
    """
    import difflib

    from appliance.policy.classify import KINDS

    heads = {" ".join(words[:n]) for words in map(str.split, KINDS) for n in range(1, len(words))}
    accepted = KINDS | heads
    for i, rule in enumerate(config.rules):
        for j, kind in enumerate(rule.statements):
            if kind in ("*", "ANY") or kind in accepted:
                continue
            close = difflib.get_close_matches(kind, sorted(accepted), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problem = (
                f"rule '{rule.name}': '{kind}' is not a statement kind, so the rule could "
                f"never match{hint}; accepted: *, ANY, {', '.join(sorted(accepted))}"
            )
            raise ConfigError(config.path, f"rules[{i}].statements[{j}]", problem)


def _cmd_check(args: argparse.Namespace) -> int:
    config = _load(args.config, starting=True)
    if isinstance(config, int):
        return config
    try:
        check_ledger_path(config)  # not for run: it starts, and waits for a usable ledger
        _check_ledger_file(config)
        _check_targets_are_not_the_gateway(config)
        if config.network.manage_rules:
            _check_interception(config)
    except ConfigError as exc:
        return _fail(str(exc))
    _print(_one_line(f"ok: {args.config}: {len(config.targets)} targets"))
    return 0


def _check_ledger_file(config: Config) -> None:
    """The ledger file ``run`` would open is one it can extend (ConfigError naming
    ``ledger.path`` if not): a sqlgate ledger whose records after the last checkpoint
    verify with ``ledger.signing_key``, or an empty database, readable and writable
    here; a file that does not exist yet, in a directory it can be made in.

    ``run`` stops at once on another program's database or a ledger signed by another
    key, and refuses every statement (1105) while the file is no SQLite database or
    cannot be written: ``check`` said ``ok`` to all of them before.
    """
    import os

    from appliance import health

    path = config.ledger.path

    def fail(problem: str) -> NoReturn:
        raise ConfigError(config.path, "ledger.path", problem)

    if not path.exists():
        if not os.access(path.parent, os.W_OK | os.X_OK):
            fail(f"{path.parent}: not writable, so the ledger cannot be made there")
        return
    if _is_blank_database(path):
        for target, what in ((path, "the file"), (path.parent, "its directory")):
            if not os.access(target, os.W_OK):
                fail(f"{path}: {what} is not writable, so the ledger cannot be made there")
        return
    result = health.check_ledger(config)
    if result.ok is False:
        detail = result.detail
        if detail.startswith("record "):  # the chain, or its signatures, do not verify
            detail += f" with ledger.signing_key {config.ledger.signing_key}"
        if detail.startswith(("record ", "not a sqlgate ledger")):
            detail += "; the gateway cannot extend it"
        fail(f"{path}: {detail}")


def _is_blank_database(path: pathlib.Path) -> bool:
    """An empty file, or an SQLite database with no tables: the gateway makes its
    ledger in it (anything else must already be a sqlgate ledger)."""
    import sqlite3

    from appliance.ledger.store import APPLICATION_ID

    if path.stat().st_size == 0:
        return True
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return False
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.Error:
        return False
    finally:
        conn.close()
    return bool(app_id != APPLICATION_ID and tables == 0)


def _check_targets_are_not_the_gateway(config: Config) -> None:
    """No target is the gateway's own listener (ConfigError naming it): the gateway would
    dial itself for every client, each connection opening another. ``run`` refuses such
    a connection (1105); ``check`` says so before. A host that does not resolve here is
    left to the rules' check and to ``run``."""
    import socket

    from appliance import routing

    app = config.appliance
    if app.listen_port == 0:
        return
    listening = [(app.listen_host, app.listen_port)]
    for i, target in enumerate(config.targets):
        try:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except OSError:
            continue
        for info in infos:
            if routing.own_listener(listening, str(info[4][0]), target.port):
                raise ConfigError(
                    str(config.path),
                    f"targets[{i}]",
                    f"{target.host}:{target.port} is this gateway's own listener "
                    f"(appliance.listen '{app.listen}'): every client would be sent to the "
                    "gateway again; give the database's address and port",
                )


def _check_interception(config: Config) -> None:
    """With ``manage_rules``: the rules can be planned here (targets resolve, the named
    interfaces exist) and redirected clients reach the listener. A redirect leads to the
    listen port on the address the connection came in on, so a listener on loopback, or
    on IPv4 only with an IPv6 target, would refuse every redirected client."""
    from netconfig.plan import plan_rules

    plan = plan_rules(config, resolve=lookup)
    if config.network.interfaces:
        _check_interfaces(config)
    host = config.appliance.listen_host
    try:
        listen = ipaddress.ip_address(host)
    except ValueError:
        return  # a name: the system's choice
    if listen.is_loopback:
        raise ConfigError(
            str(config.path),
            "appliance.listen",
            f"'{config.appliance.listen}' is a loopback address, but redirected clients "
            "arrive on the address of the interface they came in on: listen on "
            f"[::]:{config.appliance.listen_port}",
        )
    v6 = sorted({r.daddr for r in plan.rules if r.daddr is not None and r.daddr.version == 6})
    if v6 and listen.version == 4:
        raise ConfigError(
            str(config.path),
            "appliance.listen",
            f"'{config.appliance.listen}' takes IPv4 only, but target address {v6[0]} is "
            f"IPv6: listen on [::]:{config.appliance.listen_port} (IPv4 and IPv6)",
        )


def _cmd_health(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if isinstance(config, int):
        return config
    from appliance import health

    checks = health.run(config, args.timeout)
    for check in checks:
        _print(check.line(), flush=True)
    return 1 if any(check.ok is False for check in checks) else 0


def _cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config, starting=True)
    if isinstance(config, int):
        return config
    _setup_logging(args.verbose)
    try:
        from appliance.server import serve
    except ImportError as exc:
        return _fail(f"cannot start the gateway: {exc}", 1)
    return serve(config)


def _check_interfaces(config: Config) -> None:
    """Every interface named in ``[network] interfaces`` exists here (ConfigError if not)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        for i, name in enumerate(config.network.interfaces or ()):
            if not ipr.link_lookup(ifname=name):
                raise ConfigError(
                    str(config.path),
                    f"network.interfaces[{i}]",
                    f"no interface '{name}' in this network namespace",
                )


def _split_target(text: str) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``[V6]`` or ``[V6]:PORT`` (default port 3306)."""
    host, port = text, "3306"
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise ValueError(f"'{text}' has no closing ']'")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"'{text}' is not HOST[:PORT]")
            port = rest[1:]
        if not _is_v6(host):
            raise ValueError(f"'{text}': [{host}] is not an IPv6 address")
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif ":" in text and not _is_v6(text):
        raise ValueError(f"'{text}' is not HOST[:PORT] (an IPv6 address and port: [::1]:3306)")
    if not host or "[" in host or "]" in host:
        raise ValueError(f"'{text}' is not HOST[:PORT]")
    if not _is_v6(host) and (problem := host_problem(host)) is not None:
        raise ValueError(problem)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"'{text}' is not HOST[:PORT] with a port from 1 to 65535")
    return host, int(port)


def _is_v6(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 6
    except ValueError:
        return False


def _net_probe(target: str | None, path: str | None) -> int:
    """Probe ``target``, or each target of the configuration at ``path``: exit 0 when
    every one is intercepted. The configuration is read only when it is named (a
    client's host, where the probe runs, usually has none)."""
    if target is None and path is None:
        return _fail("net probe: give --target HOST[:PORT], or -c FILE to probe its targets")
    config = _load(path, operator=True) if path is not None else None
    if isinstance(config, int):
        return config
    if target is not None:
        try:
            addresses = [_split_target(target)]
        except ValueError as exc:
            return _fail(f"--target: {exc}")
    else:
        assert config is not None
        addresses = [(t.host, t.port) for t in config.targets]
    from netconfig.probe import format_result, probe

    intercepted = True
    for host, port in addresses:
        result = probe(host, port)
        _print(format_result(result))
        intercepted = intercepted and result.intercepted
    return 0 if intercepted else 1


def _cmd_net(args: argparse.Namespace) -> int:
    action = args.net_command
    if action == "probe":
        return _net_probe(args.target, args.config)
    # remove and status act on the table alone: neither a target's name that does not
    # resolve now (DNS down) nor a secret missing may keep the rules from being removed
    config = _load(args.config, operator=action != "apply")
    if isinstance(config, int):
        return config
    from netconfig import nft
    from netconfig.plan import plan_rules

    try:
        if action == "apply":
            plan = plan_rules(config, resolve=lookup)
            if config.network.interfaces:
                _check_interfaces(config)
    except ConfigError as exc:
        return _fail(str(exc))
    try:
        if action == "apply":
            if args.dry_run:
                _print(plan.to_nft(), end="")
                return 0
            report = nft.apply(plan)
            if report.changed:
                _print(
                    f"applied: {len(report.added)} rules added, {len(report.removed)} removed"
                    + (" (table rebuilt)" if report.rebuilt else "")
                )
            else:
                _print(f"unchanged: {len(plan.rules)} rules already in place")
            return 0
        if action == "remove":
            _print("removed table inet sqlgate" if nft.remove() else "no sqlgate rules installed")
            return 0
        live = nft.live_table()
        if live is None or not live.rules:
            _print("no sqlgate rules installed")
            return 0
        _print(f"{'chain':<11} {'packets':>9} {'bytes':>11}  rule")
        for rule in live.rules:
            _print(f"{rule.chain:<11} {rule.packets:>9} {rule.bytes:>11}  {rule.tag or ''}")
        if live.dormant:
            _print(
                "table inet sqlgate is dormant: these rules see no packet, so nothing is "
                "intercepted; 'sqlgate net apply' puts them back in force"
            )
            return 0
        _print(_status_drift(config, live), flush=True)
        return 0
    except nft.NftError as exc:
        return _fail(str(exc), 1)


def _status_drift(config: Config, live: LiveTable) -> str:
    """How the listed rules compare with the ones the configuration plans: a table with a
    rule or chain gone (the forward drop, say) lists what is left with nothing amiss."""
    from netconfig import nft
    from netconfig.plan import plan_rules

    try:
        plan = plan_rules(config, resolve=lookup)
    except ConfigError as exc:
        return f"not compared with the configuration: {exc}"
    report = nft.reconcile(plan, live)[1]
    if not report.changed:
        return f"in place: the {len(plan.rules)} rules the configuration plans"
    if report.rebuilt:
        return (
            "NOT as configured (its chains are not the planned ones): 'sqlgate net apply' "
            "replaces the table"
        )
    removed = set(report.removed)
    parts = [
        f"{name} {', '.join(tags)}"
        for name, tags in (
            ("chains missing:", [c.removeprefix("chain ") for c in report.created]),
            ("missing:", [t for t in report.added if t not in removed]),
            ("changed:", [t for t in report.added if t in removed]),
            ("extra:", [t for t in report.removed if t not in set(report.added)]),
        )
        if tags
    ]
    return (
        f"NOT as configured ({'; '.join(parts)}): connections these rules do not cover may "
        "go around the gateway; 'sqlgate net apply' puts them back"
    )


def _cmd_keygen(args: argparse.Namespace) -> int:
    """Write ``ledger.key`` (PKCS8 PEM, 0600) and ``ledger.pub``; never overwrite."""
    import os
    from pathlib import Path

    from appliance.ledger.chain import generate_key, key_id, private_key_pem, public_key_pem

    if not args.out.strip():
        return _fail("--out: the directory name is empty")
    out = Path(args.out)
    key_path, pub_path = out / "ledger.key", out / "ledger.pub"
    try:
        for path in (key_path, pub_path):
            if path.exists() or path.is_symlink():
                return _fail(f"{path}: already exists; refusing to overwrite a ledger key", 1)
        if out.exists() and not out.is_dir():
            return _fail(f"--out: {out} is not a directory (the key pair goes in a directory)")
    except OSError as exc:  # a name too long, a directory on the way not searchable
        return _fail(f"--out: {out}: {exc.strerror or exc}")
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        return _fail(f"{out}: cannot create the directory: {exc.strerror or exc}", 1)
    key = generate_key()
    written: list[Path] = []
    try:
        for path, data, mode in (
            (key_path, private_key_pem(key), 0o600),
            (pub_path, public_key_pem(key.public_key()), 0o644),
        ):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            written.append(path)
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), mode)  # whatever the umask
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    except OSError as exc:
        for path in written:
            path.unlink(missing_ok=True)
        return _fail(f"{exc.filename or out}: cannot write the key: {exc.strerror or exc}", 1)
    written_id = key_id(key.public_key())
    _print(_one_line(f"wrote {key_path} (secret, mode 0600) and {pub_path}; key_id {written_id}"))
    return 0


def _cmd_account(args: argparse.Namespace) -> int:
    """``account hash``: the password from the terminal (asked twice) or one stdin line."""
    from appliance.mysql.auth import native_password_hash

    if sys.stdin is None:
        return _fail("account hash: no standard input to read the password from")
    if sys.stdin.isatty():
        import getpass

        try:
            password = getpass.getpass("password: ").encode()
            if password and getpass.getpass("again: ").encode() != password:
                return _fail("account hash: the two passwords differ; nothing printed")
        except EOFError:
            password = b""
    else:
        line = sys.stdin.buffer.readline()
        password = line[:-1] if line.endswith(b"\n") else line
        password = password[:-1] if password.endswith(b"\r") else password
    if not password:
        return _fail("account hash: the password is empty; a gateway account needs one")
    _print(native_password_hash(password))
    return 0


def _unsigned_tail(result: VerifyResult) -> str:
    """Why ``--all-signed`` fails: the first record no checkpoint signs, and how many."""
    first = result.last_seq - result.unsigned + 1
    if result.last_checkpoint_seq is None:
        return f"record {first}: not signed: the ledger holds no checkpoint"
    return (
        f"record {first}: not signed: {result.unsigned} records follow the last checkpoint "
        f"(seq {result.last_checkpoint_seq}); a gateway that stops cleanly signs its last "
        "records, a running one within a second"
    )


def _read_held_head(text: str) -> Head:
    """``--checkpoint``: a head as JSON text, or the name of a file holding it."""
    import json

    from appliance.ledger.chain import Head as HeldHead

    source = "--checkpoint"
    if not text.strip():
        raise ValueError(f"{source}: empty: give a head as JSON text or the file holding it")
    if not text.lstrip().startswith("{"):
        source = f"--checkpoint: {text}"
        try:
            text = read_small_file(text).decode("utf-8")
        except IsADirectoryError:
            raise ValueError(f"{source}: is a directory") from None
        except (OSError, ValueError) as exc:
            if isinstance(exc, OSError):
                why = str(exc.strerror)
            else:
                why = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
            raise ValueError(f"{source}: cannot read the file: {why}") from None
    try:
        return HeldHead.from_json(json.loads(text))
    except RecursionError:
        raise ValueError(f"{source}: not a head: JSON nested too deeply") from None
    except ValueError as exc:
        raise ValueError(
            f"{source}: not a head as 'sqlgate ledger head' prints it: {exc}"
        ) from None


def _parse_since(text: str) -> str:
    """``--since``: an ISO 8601 date or time (UTC unless it says otherwise), in ledger form."""
    from datetime import UTC, datetime

    value = text.strip()
    if len(value) == 4 and value.isdigit():  # a year
        value += "-01-01"
    elif len(value) == 7 and value[4:5] == "-":  # a month
        value += "-01"
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"--since: '{text}' is not an ISO 8601 date or time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        when = when.astimezone(UTC)
    except OverflowError:  # before year 1 or after 9999 in UTC: before or after every record
        when = (datetime.min if when.year == 1 else datetime.max).replace(tzinfo=UTC)
    # isoformat, not strftime("%Y"), which writes the year 999 as "999" (after "2026")
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")


_T = TypeVar("_T")


def _opening(ledger: str, open_: Callable[[], _T]) -> _T:
    """``open_()``, with a refusal of the system (a directory without search
    permission) reported like any ledger that cannot be opened (LedgerFileError)."""
    from appliance.ledger.store import LedgerFileError

    try:
        return open_()
    except OSError as exc:
        raise LedgerFileError(f"{ledger}: cannot open: {exc.strerror or exc}") from None


def _cmd_ledger(args: argparse.Namespace) -> int:
    """``ledger verify|head|export``: exit 1 means the ledger was read and found wanting
    (or damaged); a missing or foreign file, a bad key or a bad argument is exit 2."""
    import json

    from appliance.ledger import store
    from appliance.ledger.chain import KINDS, LedgerError, load_public_key
    from appliance.ledger.store import LedgerDamaged

    action = args.ledger_command
    try:
        if action == "verify":
            try:
                read_small_file(args.pubkey)  # not a device or a FIFO, read without end
            except ValueError as exc:
                return _fail(f"{args.pubkey}: cannot read the key: {exc}")
            except OSError:
                pass  # load_public_key says why, naming the file
            public_key = load_public_key(args.pubkey)
            held = None
            if args.checkpoint is not None:
                try:
                    held = _read_held_head(args.checkpoint)
                except ValueError as exc:
                    return _fail(str(exc))
            result = _opening(args.ledger, lambda: store.verify_file(args.ledger, public_key, held))
            if not result.ok:
                return _fail(f"ledger verify: record {result.first_bad_seq}: {result.reason}", 1)
            if args.all_signed and result.unsigned:
                return _fail(f"ledger verify: {_unsigned_tail(result)}", 1)
            unsigned = (
                "1 record after it is"
                if result.unsigned == 1
                else f"{result.unsigned} records after it are"
            )
            unsigned_yet = (
                "1 record is" if result.unsigned == 1 else f"{result.unsigned} records are"
            )
            if result.last_checkpoint_seq is None:
                signed = f"no checkpoint yet ({unsigned_yet} not yet signed)"
            else:  # a checkpoint signs the record before it: the seq `ledger head` prints
                signed = (
                    f"last checkpoint at seq {result.last_checkpoint_seq}, which signs seq "
                    f"{result.last_checkpoint_seq - 1} ({unsigned} not yet signed)"
                )
            _print(f"ok: {result.records} records, {signed}")
            for first, last in result.signed_after_the_fact:
                _print(
                    f"records {first} to {last}: signed after the fact, not the gateway's word "
                    "(an unsigned_tail_signed alert names them: it found them unsigned, left by "
                    "a run that stopped before signing them or added to the file)"
                )
            if held is not None:
                _print(f"held checkpoint at seq {held.seq}: present, hash and signature match")
            return 0
        if action == "head":
            head = _opening(args.ledger, lambda: store.read_head(args.ledger))
            if head is None:
                return _fail(f"{args.ledger}: no signed checkpoint yet", 1)
            _print(json.dumps(head.to_json()))
            return 0
        if args.kind is not None and args.kind not in KINDS:
            return _fail(f"--kind: '{args.kind}' is not one of {', '.join(KINDS)}")
        try:
            since = None if args.since is None else _parse_since(args.since)
        except ValueError as exc:
            return _fail(str(exc))
        if sys.stdout is None:
            return _fail("ledger export: standard output is closed: nowhere to write", 1)
        if args.with_results and args.kind in (None, "result"):
            # each answer is read with its session's records: all are read
            from appliance.replay import with_answers

            kind = args.kind
            bodies = with_answers(
                args.ledger,
                _opening(args.ledger, lambda: store.export(args.ledger, session=args.session)),
                lambda r: (
                    (kind is None or r.get("kind") == kind)
                    and (since is None or str(r.get("ts")) >= since)
                ),
            )
        else:
            bodies = _opening(
                args.ledger,
                lambda: store.export(
                    args.ledger, session=args.session, since=since, kind=args.kind
                ),
            )
        from appliance.shown import json_line

        out = sys.stdout.buffer
        try:
            try:
                for body in bodies:
                    out.write(json_line(body).encode() + b"\n")
            finally:
                out.flush()  # what was read before a damaged record, ahead of the error
        except BrokenPipeError:  # the reader went away (``| head``): stop quietly
            _drop_stdout()
        return 0
    except LedgerDamaged as exc:
        return _fail(str(exc), 1)
    except LedgerError as exc:
        return _fail(str(exc))


def _cmd_replay(args: argparse.Namespace) -> int:
    """``replay SESSION``: the session as the agent lived it; exit 1 when the ledger
    holds no such session or a record of it cannot be read (the ledger is damaged)."""
    import itertools

    from appliance.ledger.chain import LedgerError
    from appliance.ledger.store import LedgerDamaged
    from appliance.replay import play, steps

    if sys.stdout is None:
        return _fail("replay: standard output is closed: nowhere to write", 1)
    if not args.session.strip():
        return _fail(
            "replay: the session id is empty (sqlgate ledger export --kind "
            "session_start lists them)"
        )
    try:  # each step is read as it is played: memory holds one answer at a time
        found = _opening(
            args.ledger,
            lambda: steps(args.ledger, args.session, answers=args.format == "json"),
        )
        first = next(found, None)
        if first is None:
            listing = f"sqlgate ledger export --ledger {shlex.quote(str(args.ledger))}"
            return _fail(
                f"{args.ledger}: no session {args.session} ({listing} --kind session_start "
                "lists them)",
                1,
            )
        play(itertools.chain([first], found), sys.stdout, speed=args.speed, fmt=args.format)
    except BrokenPipeError:
        _drop_stdout()
    except LedgerDamaged as exc:  # the steps before it were written
        return _fail(str(exc), 1)
    except LedgerError as exc:
        return _fail(str(exc))
    return 0


def _cmd_approvals(args: argparse.Namespace) -> int:
    """``approvals list|show|approve|deny`` over the ``[bus]`` of the configuration: exit 1
    when the broker or the gateway says no, 2 for bad input."""
    import asyncio
    import time

    from appliance import operator

    config = _load(args.config, operator=True)
    if isinstance(config, int):
        return config
    if not config.bus.enabled:
        return _fail(f"{args.config}: no [bus] section: the approvals are on the MQTT broker")
    action = args.approvals_command
    try:
        if action == "list":
            requests = asyncio.run(operator.list_pending(config.bus, args.appliance))
            if not requests:
                sys.stderr.write("no pending approvals\n")
                return 0
            width = 200
            if sys.stdout.isatty():
                import shutil

                width = shutil.get_terminal_size((width, 24)).columns
            now = time.time()
            for request in requests:
                _print(operator.format_request(request, now, width))
            for note in operator.offline_notes(requests):
                sys.stderr.write(note + "\n")
            return 0
        if action == "show":
            request = asyncio.run(operator.show_pending(config.bus, args.id))
            _print(operator.format_whole(request, time.time()), flush=True)
            return 0
        claim = config.identity.username_claim if config.identity is not None else "email"
        token, name = operator.read_token_for(args.token_file, claim)
        grant = getattr(args, "grant_minutes", None)
        if grant is not None and not 1 <= grant <= 1440:
            return _fail(f"--grant-minutes: expected 1 to 1440, not {grant}", 2)
        grant = grant or 0  # 0: no grant
        asyncio.run(
            operator.decide(
                config.bus, args.id, action, token, name, reason=args.reason, grant_minutes=grant
            )
        )
    except operator.OperatorError as exc:
        return _fail(str(exc), exc.status)
    _print(f"{'approved' if action == 'approve' else 'denied'} {args.id}")
    return 0


def _cmd_tui(args: argparse.Namespace) -> int:
    """The operator console; one line on stderr when it cannot start."""
    from tui.launch import ConsoleError, run_console

    if args.speed is not None and args.recording is None:
        return _fail("--speed: only with --recording (the broker's events come as they happen)")
    config = _load(args.config, operator=True)
    if isinstance(config, int):
        return config
    try:
        return run_console(config, args.config, args.token_file, args.recording, args.speed)
    except ConsoleError as exc:
        return _fail(str(exc), exc.status)


def _command_name(args: argparse.Namespace) -> str:
    words = [args.command]
    for attr in ("account_command", "net_command", "ledger_command", "approvals_command"):
        sub = getattr(args, attr, None)
        if sub:
            words.append(sub)
    return " ".join(words)


def main(argv: list[str] | None = None) -> int:
    """Run the ``sqlgate`` command line; return the exit status."""
    try:
        return _main(argv)
    finally:
        _flush_stdout()  # here, not at exit: a reader gone is no error of the command


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already reported
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    for name, value in vars(args).items():
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # bytes the locale could not decode (surrogates)
                return _fail(f"{name.replace('_', '-')}: the argument is not valid UTF-8 text")
    return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    """The command's exit status; one line on stderr for what it could not do."""
    try:
        if args.command == "check":
            return _cmd_check(args)
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "health":
            return _cmd_health(args)
        if args.command == "net":
            return _cmd_net(args)
        if args.command == "keygen":
            return _cmd_keygen(args)
        if args.command == "ledger":
            return _cmd_ledger(args)
        if args.command == "account":
            return _cmd_account(args)
        if args.command == "approvals":
            return _cmd_approvals(args)
        if args.command == "tui":
            return _cmd_tui(args)
        if args.command == "replay":
            return _cmd_replay(args)
        return _fail(f"'{_command_name(args)}' is not available yet")
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        return _fail(str(exc), 1)


if __name__ == "__main__":
    raise SystemExit(main())
