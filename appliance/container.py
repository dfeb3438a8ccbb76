"""The appliance image's entry point: ``python -m appliance.container COMMAND...``.

The ``Containerfile`` runs every command through it (``ENTRYPOINT``; the ``CMD`` is
``sqlgate run -c /etc/sqlgate/sqlgate.toml``, the ``HEALTHCHECK`` ``sqlgate health``):

1. **Privileges.** Started as root (the image's default, and the only way Docker and
   Kubernetes hand capabilities to a process), it re-executes itself through ``setpriv``
   as the ``sqlgate`` user (``SQLGATE_USER``) keeping, as ambient capabilities, only
   ``CAP_NET_ADMIN`` (interception rules, socket marks) and ``CAP_NET_RAW`` (the bypass
   sentinel), those of the two the container was given; ``no_new_privs`` is set, and the
   bounding set is cut to the two when ``CAP_SETPCAP`` allows it. Switching needs
   ``CAP_SETUID`` and ``CAP_SETGID`` at start; without them the entry point refuses
   to start (exit 1) rather than run as root; with ``SQLGATE_USER=root`` the command
   runs as root with what the container grants. The umask is 027 for every command.
   Started as another user (``podman run --user``, which hands added capabilities over
   as ambient ones), the command runs as that user.
2. **Embedded broker.** With ``SQLGATE_EMBEDDED_BROKER=1`` and the command
   ``sqlgate run``, a Mosquitto for single-box installs is started first, when the
   configuration's ``[bus] url`` is ``mqtt://`` on a loopback address (a broker
   elsewhere is used as it is, and nothing is started). It listens only there, refuses
   anonymous clients, knows the gateway (``bus.username``/``bus.password_file``) and,
   when ``/etc/sqlgate/operator.pw`` (``SQLGATE_BROKER_OPERATOR_PASSWORD_FILE``) exists,
   an ``operator``, with the ACL of docs/events.md, ``set_tcp_nodelay true``, no
   persistence, and its log on stderr.
3. **Running.** Without a broker the command replaces this process (the gateway is PID 1
   and gets SIGTERM itself). With one, this process stays PID 1: it forwards signals to
   the gateway, restarts Mosquitto should it die, reaps orphans, and when the gateway
   exits stops Mosquitto and exits with the gateway's status.

Problems are one line on stderr starting with ``sqlgate-entrypoint:``; exit status 2 for
a configuration the broker cannot be built from, 1 for anything else that stops it.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appliance.config import BusConfig

__all__ = [
    "BrokerFiles",
    "EntrypointError",
    "broker_files",
    "config_path",
    "main",
    "setpriv_argv",
]

DEFAULT_CONFIG = "/etc/sqlgate/sqlgate.toml"
DEFAULT_USER = "sqlgate"
OPERATOR_USER = "operator"
ENV_USER = "SQLGATE_USER"
ENV_BROKER = "SQLGATE_EMBEDDED_BROKER"
ENV_OPERATOR_PASSWORD = "SQLGATE_BROKER_OPERATOR_PASSWORD_FILE"

# capability numbers (linux/capability.h)
CAP_SETGID = 6
CAP_SETUID = 7
CAP_SETPCAP = 8
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
KEPT_CAPS = {CAP_NET_ADMIN: "net_admin", CAP_NET_RAW: "net_raw"}

UMASK = 0o027  # files the commands create: no access for other users

BROKER_START_TIMEOUT_S = 10.0
BROKER_STOP_TIMEOUT_S = 10.0
BROKER_RESTART_MAX_S = 30.0
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")
_STOPS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)  # the gateway drains and exits
# ... and those it logs and ignores (appliance.server STOP_SIGNALS, IGNORED_SIGNALS): all
# go to the gateway, blocked until its handlers exist (a default action would end it)
_FORWARDED = (*_STOPS, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


class EntrypointError(Exception):
    """Stops the entry point: ``str()`` is the line to print, ``status`` the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def _say(message: str) -> None:
    sys.stderr.write(f"sqlgate-entrypoint: {message}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------------------
# privileges


def _capability_sets(status_text: str) -> dict[str, int]:
    """``CapInh``/``CapPrm``/``CapEff``/``CapBnd``/``CapAmb`` of /proc/PID/status."""
    sets = {}
    for line in status_text.splitlines():
        name, _, value = line.partition(":")
        if name.startswith("Cap"):
            sets[name] = int(value.strip(), 16)
    return sets


def setpriv_argv(uid: int, gid: int, permitted: int, argv: Sequence[str]) -> list[str]:
    """``setpriv ... -- ARGV``: become ``uid``/``gid`` (with the user's groups) keeping
    CAP_NET_ADMIN/CAP_NET_RAW (those in ``permitted``) as ambient capabilities; cut the
    bounding set when CAP_SETPCAP allows."""
    keep = [name for cap, name in KEPT_CAPS.items() if permitted >> cap & 1]
    caps = ",".join(["-all", *(f"+{name}" for name in keep)])
    command = [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={gid}",
        "--init-groups",
        f"--inh-caps={caps}",
        f"--ambient-caps={caps}",
        "--no-new-privs",
    ]
    if permitted >> CAP_SETPCAP & 1:
        command.append(f"--bounding-set={caps}")
    return [*command, "--", *argv]


def _drop_privileges(argv: Sequence[str], env: Mapping[str, str]) -> None:
    """As root: re-execute ``argv`` as the unprivileged user (see the module's 1.)."""
    if os.geteuid() != 0:
        return
    user = env.get(ENV_USER, DEFAULT_USER) or DEFAULT_USER
    if user in ("root", "0"):
        return
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        raise EntrypointError(f"{ENV_USER}: no user '{user}' in this image") from None
    try:
        sets = _capability_sets(Path("/proc/self/status").read_text())
    except OSError as exc:
        raise EntrypointError(f"cannot read my capabilities: {exc.strerror}") from None
    permitted = sets.get("CapPrm", 0)
    if not (permitted >> CAP_SETUID & 1 and permitted >> CAP_SETGID & 1):
        # Fail closed: root without capabilities still owns the image (the venv's code,
        # /etc) and has no no_new_privs; running so is a choice made with SQLGATE_USER.
        raise EntrypointError(
            f"no CAP_SETUID/CAP_SETGID to become '{user}': refusing to run as root (add "
            f"--cap-add SETUID,SETGID, start as the user with --user 10001:10001, or set "
            f"{ENV_USER}=root to run as root on purpose)"
        )
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise EntrypointError("setpriv not found (Debian package util-linux)")
    command = setpriv_argv(
        account.pw_uid,
        account.pw_gid,
        permitted,
        [sys.executable, "-m", "appliance.container", *argv],
    )
    os.execv(setpriv, command)


# --------------------------------------------------------------------------------------
# the embedded broker


def config_path(argv: Sequence[str]) -> str:
    """The ``-c``/``--config`` value of a ``sqlgate`` command line (else the default)."""
    for index, arg in enumerate(argv):
        if arg in ("-c", "--config") and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--config="):
            return arg.partition("=")[2]
        if arg.startswith("-c") and len(arg) > 2:
            return arg[2:]
    return DEFAULT_CONFIG


def _is_gateway_run(argv: Sequence[str]) -> bool:
    return len(argv) >= 2 and Path(argv[0]).name == "sqlgate" and argv[1] == "run"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """What Mosquitto is started with: file name -> text (``passwords`` in clear, to be
    hashed in place with ``mosquitto_passwd -U``)."""

    config: str
    acl: str
    passwords: str


def broker_files(
    bus: BusConfig, directory: Path, operator_password: bytes | None, run_as: str | None
) -> BrokerFiles:
    """The broker of docs/events.md for this ``[bus]``, its files in ``directory``."""
    if bus.tls:
        raise EntrypointError(
            f"{ENV_BROKER}: bus.url {bus.url} asks for TLS; the embedded broker listens "
            f"on plain MQTT on loopback only: use mqtt://{bus.host}:{bus.port}",
            2,
        )
    if bus.username is None or bus.password is None:
        raise EntrypointError(
            f"{ENV_BROKER}: the embedded broker refuses anonymous clients: set "
            "bus.username and bus.password_file",
            2,
        )
    if bus.username == OPERATOR_USER:
        raise EntrypointError(
            f"{ENV_BROKER}: bus.username '{OPERATOR_USER}' is the console's user; "
            "give the gateway its own (sqlgate)",
            2,
        )
    users = {bus.username: bus.password}
    if operator_password is not None:
        users[OPERATOR_USER] = operator_password
    lines = []
    for user, password in users.items():
        try:
            text = password.decode("utf-8")
        except UnicodeDecodeError:
            raise EntrypointError(f"the MQTT password of '{user}' is not UTF-8", 2) from None
        if not text or any(c in text for c in "\r\n\0"):
            raise EntrypointError(f"the MQTT password of '{user}' is empty or not one line", 2)
        lines.append(f"{user}:{text}\n")
    p = bus.topic_prefix
    acl = f"user {bus.username}\ntopic readwrite {p}/#\n"
    if operator_password is not None:
        acl += (
            f"\nuser {OPERATOR_USER}\n"
            f"topic read {p}/+/status\n"
            f"topic read {p}/+/sessions/#\n"
            f"topic read {p}/+/alerts\n"
            f"topic read {p}/+/checkpoints\n"
            f"topic read {p}/+/approvals/+\n"
            f"topic write {p}/+/approvals/+/decision\n"
            f"topic write {p}/+/kill/+\n"
        )
    config = "".join(
        f"{line}\n"
        for line in [
            "# The embedded broker of the sqlgate image (SQLGATE_EMBEDDED_BROKER=1).",
            "per_listener_settings false",
            "allow_anonymous false",
            "set_tcp_nodelay true",  # no 40 ms Nagle waits between small messages
            # room for a console that pauses while gateways publish (docs/events.md)
            "max_queued_messages 10000",
            "max_queued_bytes 67108864",
            # nobody reads more (docs/events.md): a bigger message from anyone with a
            # login would only fill the gateway's memory before it is dropped
            "message_size_limit 1048576",
            f"password_file {directory / 'passwords'}",
            f"acl_file {directory / 'acl'}",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages false",  # the health check connects every 30 s
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            # as root it would switch to 'mosquitto', who cannot read these files
            f"user {run_as}" if run_as else "",
            f"listener {bus.port} {bus.host}",
        ]
        if line
    )
    return BrokerFiles(config=config, acl=acl, passwords="".join(lines))


def _program(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_SBIN))
    if path is None:
        raise EntrypointError(f"{name} not found (Debian package mosquitto)")
    return path


class _Broker:
    """The embedded Mosquitto: configured once, (re)started on demand."""

    def __init__(self, bus: BusConfig, operator_password: bytes | None) -> None:
        self.bus = bus
        try:
            run_as: str | None = pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:  # a --user without a name here: mosquitto stays who it is anyway
            run_as = None
        self.directory = Path(tempfile.mkdtemp(prefix="sqlgate-broker-"))
        try:
            files = broker_files(self.bus, self.directory, operator_password, run_as)
        except BaseException:  # a bad password: no empty directory left behind
            shutil.rmtree(self.directory, ignore_errors=True)
            raise
        self.config_file = self.directory / "mosquitto.conf"
        for name, text in (
            ("mosquitto.conf", files.config),
            ("acl", files.acl),
            ("passwords", files.passwords),
        ):
            path = self.directory / name
            path.touch(mode=0o600)
            path.write_text(text)
        done = subprocess.run(
            [_program("mosquitto_passwd"), "-U", str(self.directory / "passwords")],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise EntrypointError(f"mosquitto_passwd failed: {done.stderr.strip()}")
        self.pid: int | None = None
        self.started_at = 0.0

    def _port_free(self) -> None:
        """EntrypointError when something already listens where the broker is to: the
        gateway would connect there (a broker without its passwords or ACL, anyone's)
        and take it for its own."""
        try:
            infos = socket.getaddrinfo(self.bus.host, self.bus.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise EntrypointError(f"broker address {self.bus.host}: {exc}") from None
        for family, kind, proto, _, address in infos:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(address)
                except OSError as exc:
                    if exc.errno == errno.EADDRINUSE:
                        raise EntrypointError(
                            f"{self.bus.host}:{self.bus.port} is already in use by another "
                            "program: the embedded broker cannot listen there, and the "
                            "gateway must not take that one for its own (stop it, or turn "
                            "SQLGATE_EMBEDDED_BROKER off and point [bus] url at it)"
                        ) from None
                    raise EntrypointError(
                        f"cannot listen on {self.bus.host}:{self.bus.port}: {exc.strerror}"
                    ) from None

    def start(self) -> None:
        self._port_free()
        argv = [_program("mosquitto"), "-c", str(self.config_file)]
        sets = _capability_sets(Path("/proc/self/status").read_text())
        setpriv = shutil.which("setpriv")
        if sets.get("CapAmb", 0) and setpriv is not None:
            # the gateway's capabilities are not the broker's
            argv = [setpriv, "--inh-caps=-all", "--ambient-caps=-all", "--", *argv]
        self.pid = os.posix_spawn(argv[0], argv, os.environ)
        self.started_at = time.monotonic()

    def wait_ready(self) -> None:
        """Until it accepts TCP connections (EntrypointError when it exits or hangs)."""
        deadline = time.monotonic() + BROKER_START_TIMEOUT_S
        family = socket.AF_INET6 if ":" in self.bus.host else socket.AF_INET
        while time.monotonic() < deadline:
            assert self.pid is not None
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.pid = None
                raise EntrypointError(f"mosquitto {_ended(status)} while starting")
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.settimeout(0.5)
                try:
                    probe.connect((self.bus.host, self.bus.port))
                except OSError:
                    pass
                else:  # ours, unless it has just died (and another answered)
                    pid, status = os.waitpid(self.pid, os.WNOHANG)
                    if pid:
                        self.pid = None
                        raise EntrypointError(f"mosquitto {_ended(status)} while starting")
                    return
            time.sleep(0.05)
        self.stop()
        raise EntrypointError(
            f"mosquitto did not listen on {self.bus.host}:{self.bus.port} "
            f"within {BROKER_START_TIMEOUT_S:.0f}s"
        )

    def stop(self) -> None:
        """Stop Mosquitto if it runs; its files go either way."""
        try:
            self._end()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _end(self) -> None:
        pid, self.pid = self.pid, None
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + BROKER_STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def _embedded_broker(argv: Sequence[str], env: Mapping[str, str]) -> _Broker | None:
    """The broker to start for this command, or None (see the module's 2.)."""
    if not _truthy(env.get(ENV_BROKER)) or not _is_gateway_run(argv):
        return None
    from appliance.config import MAX_SECRET_BYTES, ConfigError, load_config, read_small_file

    try:
        config = load_config(config_path(argv))
    except ConfigError as exc:
        raise EntrypointError(str(exc), 2) from None
    bus = config.bus
    if not bus.enabled:
        _say(f"{ENV_BROKER}: the configuration has no [bus]: no broker started")
        return None
    if not _is_loopback(bus.host):
        _say(f"{ENV_BROKER}: bus.url {bus.url} is not on this machine: no broker started")
        return None
    named = env.get(ENV_OPERATOR_PASSWORD)
    password_file = Path(named) if named else config.path.parent / "operator.pw"
    operator_password: bytes | None = None
    try:  # a regular file (a FIFO would hold the start for ever) of a password's size
        data = read_small_file(password_file, MAX_SECRET_BYTES)
        # one trailing line end, as the configuration's own password files may have
        operator_password = data.removesuffix(b"\n").removesuffix(b"\r")
    except FileNotFoundError:
        if named:
            raise EntrypointError(f"{ENV_OPERATOR_PASSWORD}: {named}: no such file", 2) from None
        _say(f"no {password_file}: the broker knows no '{OPERATOR_USER}' (no console)")
    except IsADirectoryError:
        raise EntrypointError(f"{password_file}: cannot read: is a directory", 2) from None
    except OSError as exc:
        raise EntrypointError(f"{password_file}: cannot read: {exc.strerror}", 2) from None
    except ValueError as exc:  # not a regular file, or larger than a password
        raise EntrypointError(f"{password_file}: cannot read: {exc}", 2) from None
    return _Broker(bus, operator_password)


# --------------------------------------------------------------------------------------
# running


def _ended(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        return f"exited with {code}"
    return f"was killed by {signal.Signals(-code).name}"


def _supervise(argv: Sequence[str], broker: _Broker) -> int:
    """Run the gateway beside the broker (see the module's 3.); the gateway's status."""
    gateway: int | None = None
    stop_signal: int | None = None

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stop_signal
        if gateway is None:
            if signum in _STOPS:
                stop_signal = signum  # not started yet: it will not be
            return
        try:
            os.kill(gateway, signum)
        except ProcessLookupError:
            pass

    for signum in _FORWARDED:
        signal.signal(signum, forward)
    # the gateway starts with them blocked
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)
    try:
        broker.start()
        broker.wait_ready()
        _say(f"embedded broker listening on {broker.bus.url}")
        program = shutil.which(argv[0])
        if program is None:
            raise EntrypointError(f"{argv[0]}: command not found", 127)
        if stop_signal is not None:
            return 0  # stopped before the gateway started: nothing to drain
        gateway = os.posix_spawn(program, list(argv), os.environ, setsigmask=_FORWARDED)
        delay = 1.0
        restart_at: float | None = None  # the broker is down: start it again then
        while True:
            if restart_at is None:
                pid, status = os.wait()
            else:  # the gateway's end is reaped at once, not after the broker's delay
                pid, status = os.waitpid(-1, os.WNOHANG)
                if not pid:
                    if time.monotonic() < restart_at:
                        time.sleep(0.05)
                        continue
                    restart_at = None
                    try:
                        broker.start()
                    except EntrypointError as exc:  # its port taken meanwhile, ...
                        _say(f"{exc}: trying again in {delay:g}s")
                        restart_at = time.monotonic() + delay
                        delay = min(delay * 2, BROKER_RESTART_MAX_S)
                    continue
            if pid == gateway:
                code = os.waitstatus_to_exitcode(status)
                return code if code >= 0 else 128 - code
            if pid == broker.pid:
                broker.pid = None
                if time.monotonic() - broker.started_at > 60:
                    delay = 1.0
                _say(f"mosquitto {_ended(status)}: restarting it in {delay:g}s")
                restart_at = time.monotonic() + delay
                delay = min(delay * 2, BROKER_RESTART_MAX_S)
            # anything else: an orphan handed to PID 1, now reaped
    finally:
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    """Become unprivileged, start the broker if asked, then run the command."""
    # First of all: as PID 1 a signal without a handler is dropped by the kernel, so a
    # stop during the start (before the gateway's handlers exist) was lost, the stop
    # ended in SIGKILL and the rules stayed. Blocked, it waits; the mask outlives exec,
    # and the gateway lifts it once its handlers are in place.
    signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
    # What the gateway makes (the ledger with its -wal and -shm, the masking key, the
    # broker's files) is nobody else's to read: the ledger holds statements and results,
    # and a bind-mounted state directory may be open to every user of the host.
    os.umask(UMASK)
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        _say("usage: python -m appliance.container COMMAND [ARGS...]")
        return 2
    if not _is_gateway_run(args):  # another command (health, approvals) keeps Ctrl-C
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)
    env = os.environ
    try:
        _drop_privileges(args, env)
        broker = _embedded_broker(args, env)
        if broker is None:
            try:
                os.execvp(args[0], args)
            except OSError as exc:
                raise EntrypointError(f"{args[0]}: {exc.strerror}", 127) from None
        return _supervise(args, broker)
    except EntrypointError as exc:
        _say(str(exc))
        return exc.status


if __name__ == "__main__":
    raise SystemExit(main())
