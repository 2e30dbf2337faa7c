"""``--discover dns``: the servers are the addresses a DNS name gives, asked every second.

What Traefik's and HAProxy's DNS discovery do for Swarm (``tasks.server``: one A record per
healthy task, with ``endpoint_mode: dnsrr``) and for a Kubernetes headless Service (one per
ready pod). It needs no Docker socket. A new address joins as NEW (no traffic until its first
check passes, as ``--discover docker`` and scaling out); an address gone from the answer is
drained, then removed once its requests in flight end (bounded, ``scaling.drained``). Swarm
takes a task out of DNS 2 s before it stops it: a poll of 1 s drains it in time.

A lookup that fails (NXDOMAIN, SERVFAIL, a timeout, no address at all) changes nothing: the
servers of the last good answer stay, the failure is one event (not one per poll), and the
next good answer is another. So a DNS hiccup never empties the balancer.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging

import dns.asyncresolver
import dns.exception
import dns.resolver

from services.balancer.background import restarting
from services.balancer.balancer import Balancer
from services.balancer.config import BalancerConfig
from services.balancer.dns_names import base_name, server_name
from services.balancer.scaling import drained
from services.common import DRAIN, MAX_SERVERS, READY

WHO = "dns"
# Each query (A, AAAA, a PTR) gives up after this many seconds: a silent nameserver delays a
# poll by this much at most, and the set found last stays meanwhile.
QUERY_SECONDS = 1.0
FAMILIES = ("A", "AAAA")
logger = logging.getLogger("ticslab.balancer.discovery")


class LookupFailed(Exception):
    """A query got no usable answer; its words say why, for the event."""


def make_resolver(nameserver: tuple[str, int] | None) -> dns.asyncresolver.Resolver:
    """dnspython's resolver, asking ``nameserver`` (address, port) or the system's; no
    cache, so every poll sees the records as they are now."""
    if nameserver is None:
        try:
            resolver = dns.asyncresolver.Resolver()
        except dns.exception.DNSException as error:
            raise ValueError(
                f"--discover dns: no system nameserver ({error}); give --discover-dns"
            ) from None
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [nameserver[0]]
        resolver.port = nameserver[1]
    resolver.cache = None
    resolver.lifetime = resolver.timeout = QUERY_SECONDS
    return resolver


def failure_words(error: dns.exception.DNSException) -> str:
    """A lookup failure said short: the form ``messages.EventText.detail`` translates for
    a timeout; DNS's own terms otherwise."""
    if isinstance(error, dns.exception.Timeout):
        return f"timeout after {QUERY_SECONDS:g} s"
    if isinstance(error, dns.resolver.NoNameservers):
        return "no nameserver answered (SERVFAIL or REFUSED)"
    return f"{type(error).__name__}: {error}"


def usable(address: str) -> bool:
    """An address a server can have: not 0.0.0.0, ::, multicast or broadcast."""
    parsed = ipaddress.ip_address(address)
    broadcast = parsed == ipaddress.IPv4Address("255.255.255.255")
    return not (parsed.is_unspecified or parsed.is_multicast or broadcast)


def backend_url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}"


class DnsDiscovery:
    """Keeps the servers it added equal to the addresses ``query`` gives; the servers given
    with ``--backend`` are never touched."""

    def __init__(self, balancer: Balancer, config: BalancerConfig) -> None:
        self.balancer = balancer
        self.query = config.discover_name
        self.port = config.discover_port
        self.interval = config.discover_interval
        self.base = base_name(self.query)
        self.resolver = make_resolver(config.discover_dns)
        self.known: dict[str, str] = {}  # address -> the server's name, while it is ours
        self.last: dict[str, frozenset[str]] = {family: frozenset() for family in FAMILIES}
        self.leaving: dict[str, asyncio.Task[None]] = {}  # address -> its drain and removal
        self.failing = False  # a failure was told, and no good answer came since
        self.over_limit = False  # addresses past MAX_SERVERS were told, and still are
        # Per family, the addresses no server can have (0.0.0.0) that its last answer gave.
        self.refused: dict[str, frozenset[str]] = {family: frozenset() for family in FAMILIES}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """The first lookup (a failure is told, not fatal: Swarm may not have started the
        servers yet), then one every ``interval``."""
        await self.poll()
        loop = restarting("dns discovery", self._follow, self.balancer.record_failure)
        self._task = asyncio.create_task(loop, name="dns discovery")

    async def stop(self) -> None:
        tasks = [task for task in (self._task, *self.leaving.values()) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.poll()

    async def poll(self) -> None:
        """Ask, then follow the answer; a failed lookup keeps every server."""
        try:
            addresses = await self.lookup()
        except LookupFailed as error:
            self._tell_failure(str(error))
            return
        await self.sync(addresses)

    async def lookup(self) -> set[str]:
        """The addresses of every family; a family whose query failed counts with its last
        answer (a resolver that drops AAAA queries costs no IPv4 server). LookupFailed when
        none answered, or the answers hold no address."""
        answers = await asyncio.gather(
            *(self._family(family) for family in FAMILIES), return_exceptions=True
        )
        failures: list[str] = []
        for family, answer in zip(FAMILIES, answers, strict=True):
            if isinstance(answer, LookupFailed):
                failures.append(f"{family}: {answer}")
            elif isinstance(answer, BaseException):
                raise answer  # a bug: restarting() tells it
            else:
                self.last[family] = answer
        found = {address for family in FAMILIES for address in self.last[family]}
        if len(failures) == len(FAMILIES) or not found:
            raise LookupFailed("; ".join(failures) or "no address in the answer")
        if failures:
            self._tell_failure("; ".join(failures))
        else:
            self._tell_recovery()
        return found

    async def _family(self, family: str) -> frozenset[str]:
        """One query's addresses; none for NXDOMAIN or no records (the name has none now)."""
        try:
            answer = await self.resolver.resolve(
                self.query, family, search=True, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN:
            return frozenset()
        except dns.exception.DNSException as error:
            raise LookupFailed(failure_words(error)) from None
        found = {record.to_text() for record in answer.rrset or ()}
        refused = frozenset(address for address in found if not usable(address))
        if untold := sorted(refused - self.refused[family]):  # once, not at every poll
            logger.warning("dns discovery: %s gave %s, left out", self.query, ", ".join(untold))
        self.refused[family] = refused  # the last answer's only: bounded by its size
        return frozenset(found - refused)

    async def sync(self, addresses: set[str]) -> None:
        """Drain what left, keep what came back while draining, add what is new (NEW)."""
        for address in sorted(self.known.keys() - addresses - self.leaving.keys()):
            self._leave(address)
        for address in sorted(addresses & self.leaving.keys()):
            self._stay(address)
        new = sorted(addresses - self.known.keys())
        room = max(MAX_SERVERS - len(self.balancer.servers), 0)
        self._tell_limit(len(new) > room)
        new = new[:room]
        pointers = await asyncio.gather(*(self._pointer(address) for address in new))
        for address, pointer in zip(new, pointers, strict=True):
            self._add(address, pointer)

    def _add(self, address: str, pointer: tuple[bytes, ...] | None) -> None:
        name = server_name(self.base, address, pointer, self.balancer.states())
        if name is None:  # every form of its name is another server's
            logger.warning("dns discovery: no free name for %s; left out", address)
            return
        self.balancer.add_server(name, backend_url(address, self.port), who=WHO)
        self.known[address] = name

    async def _pointer(self, address: str) -> tuple[bytes, ...] | None:
        """The labels of ``address``'s PTR record, or None without one (the name is then
        the address's: dns_names.py)."""
        try:
            answer = await self.resolver.resolve_address(address)
        except dns.exception.DNSException:
            return None
        labels: tuple[bytes, ...] = answer[0].target.labels
        return labels

    def _leave(self, address: str) -> None:
        """Drain ``address``'s server; a task removes it once its requests end."""
        name = self.known[address]
        try:
            self.balancer.set_admin_state(name, DRAIN, who=WHO)
        except KeyError:  # removed meanwhile (DELETE /control/servers/NAME)
            del self.known[address]
            return
        removal = restarting(
            "dns removal", lambda: self._remove(address, name), self.balancer.record_failure
        )
        self.leaving[address] = asyncio.create_task(removal, name=f"dns removal {name}")

    async def _remove(self, address: str, name: str) -> None:
        """Wait for ``name``'s requests in flight (bounded), then forget it; run again as it
        is after a crash (restarting), so each step may already be done."""
        with contextlib.suppress(KeyError):  # removed meanwhile
            left = await drained(self.balancer.get(name))
            if left:
                logger.warning("dns discovery: %s removed with %d requests in flight", name, left)
            self.balancer.remove_server(name, who=WHO)
        self.known.pop(address, None)
        self.leaving.pop(address, None)

    def _stay(self, address: str) -> None:
        """``address`` is back in the answer before its server was removed: in rotation
        again (its checks decide whether UP)."""
        self.leaving.pop(address).cancel()
        with contextlib.suppress(KeyError):
            self.balancer.set_admin_state(self.known[address], READY, who=WHO)

    def _tell_failure(self, reason: str) -> None:
        if self.failing:
            return
        self.failing = True
        kept = sorted(self.known[address] for address in self.known.keys() - self.leaving.keys())
        self._event("lookup_failed", reason=reason, kept=", ".join(kept) or "-", ok=False)

    def _tell_recovery(self) -> None:
        if self.failing:
            self.failing = False
            self._event("lookup_recovered")

    def _tell_limit(self, over: bool) -> None:
        if over and not self.over_limit:
            self._event("limit_reached", count=MAX_SERVERS, ok=False)
        self.over_limit = over

    def _event(self, action: str, **fields: object) -> None:
        self.balancer.events.add("discovery", None, action=action, query=self.query, **fields)
