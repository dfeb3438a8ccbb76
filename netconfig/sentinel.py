"""The bypass sentinel and rule watchdog: what makes "nothing passes by" checkable.

The rules (``netconfig.plan``) send every connection to a target through the proxy and
drop the rest in the forward path. Two things can still go wrong while the gateway runs,
and the sentinel watches for both:

- **Bypass**: a TCP SYN to a target's port (at its address or any other: a database's
  second address) leaves through a database-side interface with a source address that
  is not one of the gateway's own.
  The proxy connects upstream from the gateway's own address, so such a packet is a
  client that reached the database without the gateway (rules missing, a route around
  them, a second path). Alert ``bypass``. Each flow is reported once, not per retransmit.
  A limit worth knowing: if the gateway masquerades (SNAT) forwarded traffic toward the
  databases, a bypass carries the gateway's address and looks like the proxy's own.
- **Drift**: table ``inet sqlgate`` changed or disappeared behind the gateway's back
  (``nft flush ruleset``, another tool). Every ``interval_s`` the watchdog compares the
  kernel with the plan (``nft.diff``); the first pass that sees a drift raises
  ``rules_changed`` (once per drift, not once per pass) and, with ``restore``, puts the
  rules back (``nft.apply``) and raises ``rules_restored``.

The capture is a scapy ``AsyncSniffer`` over packet sockets opened inside the gateway's
namespace (a socket keeps the namespace it was created in). A classic BPF program,
assembled here so that no libpcap is needed, lets only TCP SYNs without ACK to a target
port reach Python; Python then checks address, port and source.

Threads: ``on_alert`` is called from the sentinel's own threads (the watchdog and the
capture thread), never from the caller's. It must be thread-safe and quick; an event
loop owner hands alerts over with ``loop.call_soon_threadsafe``. Neither thread dies on
an exception: a failure becomes a ``sentinel_error`` alert (once until it clears) and the
sentinel carries on; a capture that stopped is reopened by the watchdog.

Stop the sentinel before removing the rules on purpose, or it will put them back.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from scapy.arch.linux import L2ListenSocket
from scapy.interfaces import InterfaceProvider, NetworkInterface
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.sendrecv import AsyncSniffer

from netconfig import nft
from netconfig.nft import ApplyReport, _inside
from netconfig.plan import FAMILY, TABLE, Action, IPAddress, Plan
from netconfig.routes import Link, interfaces_toward, links, local_addresses

__all__ = [
    "Alert",
    "Sentinel",
    "SentinelError",
    "describe_drift",
    "not_started",
    "syn_filter",
]

log = logging.getLogger("sqlgate.sentinel")

BYPASS = "bypass"
RULES_CHANGED = "rules_changed"
RULES_RESTORED = "rules_restored"
SENTINEL_ERROR = "sentinel_error"

_FULL_CHECK_S = 30.0  # compare the rules in full at least this often, changed or not
_FLOW_MEMORY_S = 30.0  # a flow's retransmitted SYNs within this window are one bypass
_FLOW_LIMIT = 4096
_START_TIMEOUT_S = 5.0
_SYN = 0x02
_ACK = 0x10


class SentinelError(Exception):
    """The sentinel cannot start (no route, unknown interface, no capture); one line."""


@dataclass(frozen=True, slots=True)
class Alert:
    """Something an operator must know about the gateway's path to the databases."""

    kind: str  # "bypass" | "rules_changed" | "rules_restored" | "sentinel_error"
    message: str  # one line a person can act on
    details: Mapping[str, str]  # e.g. src, dst, interface; tags missing/extra
    ts: str  # UTC ISO 8601, milliseconds


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _alert(kind: str, message: str, details: Mapping[str, str]) -> Alert:
    return Alert(kind, message, MappingProxyType(dict(details)), _now())


def not_started(why: str, netns: str | None = None) -> Alert:
    """The ``sentinel_error`` alert of a sentinel that could not start (``why``: one line)."""
    details = {"source": "start"}
    if netns:
        details["netns"] = netns
    return _alert(
        SENTINEL_ERROR,
        f"{why}; the interception rules are in place, but nobody watches for connections "
        "around them or for changes to them (the sentinel needs CAP_NET_RAW)",
        details,
    )


def _endpoint(address: IPAddress, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


# --------------------------------------------------------------------------------------
# Classic BPF (pure): TCP SYN without ACK to one of the ports, IPv4 or IPv6


# linux/filter.h and linux/bpf_common.h
_LD, _LDX, _ALU, _JMP, _RET = 0x00, 0x01, 0x04, 0x05, 0x06
_W, _H, _B = 0x00, 0x08, 0x10
_ABS, _IND, _MSH = 0x20, 0x40, 0xA0
_JEQ, _JSET, _AND = 0x10, 0x40, 0x50
_SKF_AD_PROTOCOL = -0x1000  # SKF_AD_OFF + SKF_AD_PROTOCOL: the frame's ethertype
_SKF_AD_PKTTYPE = -0x1000 + 4  # SKF_AD_OFF + SKF_AD_PKTTYPE: incoming, outgoing, ...
_PACKET_OUTGOING = 4
_NET = -0x100000  # SKF_NET_OFF: loads relative to the network header, any link type
_SO_ATTACH_FILTER = 26
_ACCEPT_BYTES = 0x40000
_MAX_PORTS = 64  # beyond this, every SYN reaches Python (jump offsets are 8 bits)

Insn = tuple[int, int, int, int]  # code, jt, jf, k


def syn_filter(ports: Iterable[int]) -> list[Insn]:
    """A BPF program passing TCP SYNs (without ACK) to ``ports``, IPv4 and IPv6, that
    leave through the interface.

    Only outgoing packets: a SYN that arrives on the interface may still be redirected
    to the proxy (a gateway with one interface for clients and databases sees every
    client's SYN come in before the redirect); one that leaves toward a database has
    passed every rule. Loads go through ``SKF_NET_OFF`` so the program works on any link type; IPv4
    fragments after the first and IPv6 packets with extension headers before TCP do not
    pass (a connection's SYN carries neither). No ports: every SYN passes.
    """
    wanted = sorted(set(ports))
    if len(wanted) > _MAX_PORTS:
        wanted = []
    code: list[tuple[int, int | str, int | str, int]] = []
    labels: dict[str, int] = {}

    def op(c: int, k: int, jt: int | str = 0, jf: int | str = 0) -> None:
        code.append((c, jt, jf, k & 0xFFFFFFFF))

    def port_checks(flags: str) -> None:
        if not wanted:
            return
        for i, port in enumerate(wanted):
            op(_JMP | _JEQ, port, flags, 0 if i < len(wanted) - 1 else "reject")

    op(_LD | _W | _ABS, _SKF_AD_PKTTYPE)
    op(_JMP | _JEQ, _PACKET_OUTGOING, 0, "reject")
    op(_LD | _W | _ABS, _SKF_AD_PROTOCOL)
    op(_JMP | _JEQ, 0x0800, 0, "ip6")
    op(_LD | _B | _ABS, _NET + 9)  # protocol
    op(_JMP | _JEQ, socket.IPPROTO_TCP, 0, "reject")
    op(_LD | _H | _ABS, _NET + 6)  # flags and fragment offset
    op(_JMP | _JSET, 0x1FFF, "reject", 0)
    op(_LDX | _B | _MSH, _NET)  # X = IPv4 header length
    op(_LD | _H | _IND, _NET + 2)  # TCP destination port
    port_checks("flags4")
    labels["flags4"] = len(code)
    op(_LD | _B | _IND, _NET + 13)  # TCP flags
    op(_ALU | _AND, _SYN | _ACK)
    op(_JMP | _JEQ, _SYN, "accept", "reject")
    labels["ip6"] = len(code)
    op(_JMP | _JEQ, 0x86DD, 0, "reject")
    op(_LD | _B | _ABS, _NET + 6)  # next header
    op(_JMP | _JEQ, socket.IPPROTO_TCP, 0, "reject")
    op(_LD | _H | _ABS, _NET + 40 + 2)
    port_checks("flags6")
    labels["flags6"] = len(code)
    op(_LD | _B | _ABS, _NET + 40 + 13)
    op(_ALU | _AND, _SYN | _ACK)
    op(_JMP | _JEQ, _SYN, "accept", "reject")
    labels["accept"] = len(code)
    op(_RET, _ACCEPT_BYTES)
    labels["reject"] = len(code)
    op(_RET, 0)

    def offset(at: int, jump: int | str) -> int:
        return labels[jump] - at - 1 if isinstance(jump, str) else jump

    return [(c, offset(i, jt), offset(i, jf), k) for i, (c, jt, jf, k) in enumerate(code)]


def _attach(sock: socket.socket, program: Sequence[Insn]) -> None:
    """SO_ATTACH_FILTER: ``struct sock_fprog`` points at the instructions (copied by the
    kernel during the call)."""
    insns = b"".join(struct.pack("=HBBI", *insn) for insn in program)
    buffer = ctypes.create_string_buffer(insns, len(insns))
    fprog = struct.pack("HL", len(program), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)


# --------------------------------------------------------------------------------------
# Drift (pure)


def describe_drift(report: ApplyReport, *, restoring: bool) -> tuple[str, dict[str, str]]:
    """The ``rules_changed`` message and details for what ``nft.diff`` found."""
    table = f"table {FAMILY} {TABLE}"
    added, removed = set(report.added), set(report.removed)
    changed = [tag for tag in report.added if tag in removed]
    missing = [tag for tag in report.added if tag not in removed]
    extra = [tag for tag in report.removed if tag not in added]
    details = {"table": table}
    parts: list[str] = []
    if table in report.created:
        what = f"{table} is gone"
    elif report.flags & nft.NFT_TABLE_F_DORMANT:
        what = f"{table} was switched off (flags dormant: its rules saw no packet)"
    elif report.flags:
        what = f"{table} has flags 0x{report.flags:x} the gateway did not set"
    elif report.rebuilt:
        what = f"the chains of {table} were replaced"
    else:
        what = f"{table} was changed"
    chains = [name for name in report.created if name != table]
    if chains:
        parts.append(f"{len(chains)} chain{'s' if len(chains) != 1 else ''} missing")
        details["chains_missing"] = ", ".join(c.removeprefix("chain ") for c in chains)
    for name, tags in (("missing", missing), ("extra", extra), ("changed", changed)):
        if tags and not report.flags:  # replaced for its flags: every rule counts as changed
            parts.append(f"{len(tags)} rule{'s' if len(tags) != 1 else ''} {name}")
            details[name] = ", ".join(tags)
    if report.rebuilt:
        details["rebuilt"] = "yes"
    if report.flags:
        details["flags"] = f"0x{report.flags:x}"
    counts = f" ({', '.join(parts)})" if parts else ""
    action = "restoring them" if restoring else "run 'sqlgate net apply' to put them back"
    return f"the gateway's rules changed behind its back: {what}{counts}; {action}", details


# --------------------------------------------------------------------------------------
# The sentinel


class Sentinel:
    """Watches the database-side interfaces for bypasses and the rules for drift.

    ``interfaces``: where to capture; by default the interfaces toward the plan's target
    addresses (``routes.interfaces_toward``), which may also face the clients (one
    interface for both): only SYNs leaving an interface count, so a client's SYN coming
    in to be redirected is not a bypass. ``netns``: the gateway's namespace (a name
    under /run/netns or a path); ``None`` is the caller's. ``on_alert`` runs on the
    sentinel's threads, so it must be thread-safe (see the module docstring). ``stop()``
    may be called from any thread, ``on_alert`` included.
    """

    def __init__(
        self,
        plan: Plan,
        *,
        on_alert: Callable[[Alert], None],
        interfaces: Sequence[str] | None = None,
        netns: str | None = None,
        interval_s: float = 0.5,
        restore: bool = True,
    ) -> None:
        if not interval_s > 0:
            raise ValueError("interval_s must be positive")
        self.plan = plan
        self.netns = netns
        self.interval_s = interval_s
        self.restore = restore
        self._on_alert = on_alert
        self._interfaces = tuple(interfaces) if interfaces else ()
        targets: dict[tuple[IPAddress, int], str] = {}
        ports: dict[int, list[str]] = {}
        for rule in plan.rules:
            if rule.action is Action.DROP and rule.daddr is not None and rule.dport is not None:
                # "sqlgate:bypass-drop:NAME" or ".../NAME/ADDRESS": the target's name
                name = rule.tag.split(":", 2)[-1].split("/")[0]
                targets[(rule.daddr, rule.dport)] = name
                if name not in ports.setdefault(rule.dport, []):
                    ports[rule.dport].append(name)
        self._targets = targets
        # A SYN to a target's port at an address no target names (the database's other
        # address) is a bypass too: it names the targets on that port.
        self._ports = {port: ", ".join(names) for port, names in ports.items()}
        self._program = syn_filter(ports)
        self._lock = threading.Lock()  # start/stop, the capture's state, error memory
        self._check_lock = threading.RLock()  # one check_rules at a time
        self._stopping = threading.Event()
        self._started = False
        self._stopped = False
        self._watchdog: threading.Thread | None = None
        self._sniffer: Any = None
        self._sockets: dict[Any, str] = {}
        self._watched: tuple[str, ...] = ()
        self._local: frozenset[IPAddress] = frozenset()
        self._drift: tuple[tuple[str, ...], ...] | None = None
        # the ruleset generation at which the rules were last found as planned, and when
        # a full comparison is due regardless (see check_rules)
        self._clean_generation: int | None = None
        self._full_due = 0.0
        self._errors: dict[str, str] = {}
        self._flows: dict[tuple[IPAddress, int, IPAddress, int], float] = {}

    @property
    def interfaces(self) -> tuple[str, ...]:
        """The interfaces being watched (known once started)."""
        return self._watched

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Open the capture in the namespace and start the watchdog; ``SentinelError`` when
        the interfaces cannot be found or captured on. Call it once."""
        with self._lock:
            if self._started:
                raise RuntimeError("a Sentinel is started once")
            self._started = True
        try:
            names = self._interfaces or tuple(
                interfaces_toward(sorted({str(a) for a, _ in self._targets}), self.netns)
            )
            if not names:
                raise SentinelError("the plan has no targets, so there is no interface to watch")
            self._watched = tuple(names)
            self._local = self._own_addresses()
            self._open_capture()
        except Exception as exc:
            with self._lock:
                self._stopped = True
            raise SentinelError(f"bypass sentinel: {exc}") from None
        watchdog = threading.Thread(target=self._watch, name="sqlgate-sentinel-watchdog")
        watchdog.daemon = True
        self._watchdog = watchdog
        watchdog.start()
        log.info("bypass sentinel watching %s", ", ".join(self._watched))

    def stop(self) -> None:
        """Stop both threads and close the capture; idempotent, and fine before start."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._stopping.set()
        watchdog = self._watchdog
        if watchdog is not None and watchdog is not threading.current_thread():
            watchdog.join()  # first: it is the one that may reopen the capture
        self._close_capture()

    # --- the watchdog -----------------------------------------------------------------

    def check_rules(self) -> Alert | None:
        """One watchdog pass over the rules; the ``rules_changed`` alert it raised, if any.

        A drift is reported once, however many passes see it; with ``restore`` the rules
        are put back right away (alert ``rules_restored``), so the next drift is a new one.
        Raises ``nft.NftError`` when netlink fails (the watchdog reports it).
        """
        with self._check_lock:
            # Reading and comparing the table costs a netlink dump and its decoding, which
            # grows with the targets (a quarter of a second for fifty): skipped while the
            # kernel's ruleset generation says nothing was committed since the rules were
            # last found in place. Read before the dump, so a change during it still counts.
            generation = nft.generation(self.netns)
            now = time.monotonic()
            if generation == self._clean_generation and now < self._full_due:
                return None
            report = nft.diff(self.plan, self.netns)
            if not report.changed:
                self._drift = None
                self._clean_generation, self._full_due = generation, now + _FULL_CHECK_S
                return None
            self._clean_generation = None
            key = (
                report.added,
                report.removed,
                report.created,
                (str(report.rebuilt), str(report.flags)),
            )
            alert: Alert | None = None
            if key != self._drift:
                self._drift = key
                message, details = describe_drift(report, restoring=self.restore)
                if self.netns:
                    details["netns"] = self.netns
                alert = _alert(RULES_CHANGED, message, details)
                self._emit(alert)
            if self.restore:
                try:
                    applied = nft.apply(self.plan, self.netns)
                except nft.NftError as exc:
                    raise nft.NftError(f"putting them back failed: {exc}") from None
                self._drift = None
                details = {
                    "table": f"table {FAMILY} {TABLE}",
                    "added": ", ".join(applied.added),
                    "removed": ", ".join(applied.removed),
                }
                if self.netns:
                    details["netns"] = self.netns
                message = (
                    f"the gateway's rules are back in table {FAMILY} {TABLE} "
                    f"({len(applied.added)} added, {len(applied.removed)} removed)"
                )
                self._emit(_alert(RULES_RESTORED, message, details))
            return alert

    def _watch(self) -> None:
        while not self._stopping.is_set():
            self._guarded("rules", self.check_rules)
            self._guarded("addresses", self._refresh_addresses)
            self._guarded("capture", self._check_capture)
            if self._stopping.wait(self.interval_s):
                return

    def _guarded(self, source: str, work: Callable[[], object]) -> None:
        """Run one part of a pass; a failure is a ``sentinel_error`` (once until it clears)."""
        try:
            work()
        except Exception as exc:
            if self._stopping.is_set():
                return
            self._error(source, _failure(source, exc))
        else:
            self._clear(source)

    def _own_addresses(self) -> frozenset[IPAddress]:
        return frozenset(ipaddress.ip_address(a) for a in local_addresses(self.netns))

    def _refresh_addresses(self) -> None:
        self._local = self._own_addresses()

    # --- the capture ------------------------------------------------------------------

    def _open_capture(self) -> None:
        """Packet sockets created inside the namespace, filtered, handed to a sniffer."""
        found = links(self._watched, self.netns)
        sockets: dict[Any, str] = {}
        try:
            with _inside(self.netns):
                for link in found:
                    sock = L2ListenSocket(iface=_scapy_interface(link), promisc=False, nofilter=1)
                    sockets[sock] = link.name
                    _attach(sock.ins, self._program)
        except Exception as exc:
            for sock in sockets:
                sock.close()
            where = f" in network namespace '{self.netns}'" if self.netns else ""
            raise SentinelError(
                f"cannot capture on {', '.join(self._watched)}{where}: {exc}"
            ) from None
        started = threading.Event()
        sniffer = AsyncSniffer(
            opened_socket=sockets,
            prn=self._on_packet,
            store=False,
            started_callback=started.set,
        )
        sniffer.start()
        if not started.wait(_START_TIMEOUT_S):
            for sock in sockets:
                sock.close()
            raise SentinelError(f"the capture on {', '.join(self._watched)} did not start")
        with self._lock:
            self._sniffer, self._sockets = sniffer, sockets

    def _close_capture(self) -> None:
        with self._lock:
            sniffer, sockets = self._sniffer, self._sockets
            self._sniffer, self._sockets = None, {}
        if sniffer is not None:
            try:
                if sniffer.running:
                    sniffer.stop(join=False)
            except Exception:  # it stopped by itself in the meantime
                pass
            if sniffer.thread is not None and sniffer.thread is not threading.current_thread():
                sniffer.thread.join()
        for sock in sockets:
            try:
                sock.close()
            except OSError:
                pass

    def _check_capture(self) -> None:
        """Reopen a capture that stopped (a socket failed, the interface went away)."""
        with self._lock:
            sniffer, sockets = self._sniffer, dict(self._sockets)
        alive = sniffer is not None and sniffer.thread is not None and sniffer.thread.is_alive()
        dead = [name for sock, name in sockets.items() if sock.closed]
        if alive and not dead:
            return
        reason = dead and f"capture on {', '.join(dead)} failed" or "the capture thread ended"
        if sniffer is not None and sniffer.exception is not None:
            reason += f" ({sniffer.exception})"
        self._close_capture()
        if self._stopping.is_set():
            return
        self._open_capture()
        # Reported after the reopen succeeded; a failed reopen raises the error instead.
        self._error("capture", f"bypass sentinel: {reason}; the capture was restarted")

    def _on_packet(self, packet: Any) -> None:
        """Runs on the capture thread for every SYN the BPF program lets through."""
        try:
            self._inspect(packet)
        except Exception as exc:  # a packet must never stop the capture
            self._error("packet", _failure("packet", exc))
        else:
            self._clear("packet")

    def _inspect(self, packet: Any) -> None:
        tcp = packet.getlayer(TCP)
        ip = packet.getlayer(IP)
        if ip is None:
            ip = packet.getlayer(IPv6)
        if tcp is None or ip is None:
            return
        flags = int(tcp.flags)
        if not flags & _SYN or flags & _ACK:
            return
        dst = ipaddress.ip_address(ip.dst)
        dport = int(tcp.dport)
        target = self._targets.get((dst, dport)) or self._ports.get(dport)
        if target is None:
            return
        src = ipaddress.ip_address(ip.src)
        if src in self._local:
            return  # the proxy's own upstream connection
        sport = int(tcp.sport)
        now = time.monotonic()
        flow = (src, sport, dst, dport)
        seen = self._flows.get(flow)
        self._flows[flow] = now
        if seen is not None and now - seen < _FLOW_MEMORY_S:
            return  # a retransmitted SYN, or the same SYN on a second interface
        if len(self._flows) > _FLOW_LIMIT:
            cutoff = now - _FLOW_MEMORY_S
            self._flows = {f: t for f, t in self._flows.items() if t >= cutoff}
        interface = str(getattr(packet, "sniffed_on", "") or "")
        destination = _endpoint(dst, dport)
        details = {
            "src": str(src),
            "sport": str(sport),
            "dst": str(dst),
            "dport": str(dport),
            "target": target,
            "interface": interface,
        }
        if self.netns:
            details["netns"] = self.netns
        message = f"connection to {destination} from {src} did not pass the gateway"
        if interface:
            message += f" (seen on {interface})"
        self._emit(_alert(BYPASS, message, details))

    # --- alerts -----------------------------------------------------------------------

    def _emit(self, alert: Alert) -> None:
        try:
            self._on_alert(alert)
        except Exception:
            log.exception("the %s alert could not be delivered: %s", alert.kind, alert.message)

    def _error(self, source: str, message: str) -> None:
        """A ``sentinel_error``, unless the same one for this source is still standing."""
        with self._lock:
            if self._errors.get(source) == message:
                return
            self._errors[source] = message
        details = {"source": source}
        if self.netns:
            details["netns"] = self.netns
        self._emit(_alert(SENTINEL_ERROR, message, details))

    def _clear(self, source: str) -> None:
        if source in self._errors:
            with self._lock:
                self._errors.pop(source, None)


def _failure(source: str, exc: BaseException) -> str:
    what = {
        "rules": "watching the gateway's rules",
        "addresses": "cannot read the gateway's addresses",
        "capture": "cannot restart the capture",
        "packet": "cannot inspect a captured packet",
    }.get(source, source)
    text = str(exc) or type(exc).__name__
    return f"bypass sentinel: {what}: {text}; still watching"


def _scapy_interface(link: Link) -> NetworkInterface:
    """A scapy interface object for a link of our namespace.

    Handing scapy a name would make it look the name up in ``conf.ifaces``, the host
    namespace's list, and reload that process-wide list from whatever namespace the
    thread is in: an object it uses as given avoids both.
    """
    return NetworkInterface(
        InterfaceProvider(),
        data={
            "name": link.name,
            "network_name": link.name,
            "description": link.name,
            "index": link.index,
            "type": link.type,
            "mac": link.mac,
        },
    )
