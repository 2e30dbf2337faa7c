"""``--discover dns``: the balancer's servers follow the A records of a name, asked of a real
nameserver on 127.0.0.1 (tests/dns_server.py) whose records each test changes.

In process first (a real Balancer and DnsDiscovery, no health checks: added servers stay NEW),
then a real ``ticslab balancer`` in front of real task servers on 127.0.0.2, .3 and .4 (A
records carry no port: every server listens on the same one, as containers do)."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from dns_server import FakeDns
from support import ServiceProcess, free_port, wait_until, wait_until_async
from test_balancer_helpers import balancer_process, status_of

from services.balancer.balancer import Balancer
from services.balancer.config import BalancerConfig, parse_nameserver
from services.balancer.dns_discovery import DnsDiscovery
from services.balancer.dns_names import base_name, ptr_names, server_name
from services.balancer.messages import EventText
from services.common import DRAIN, MAX_SERVERS, NEW, printable

NAME = "tasks.server"
PORT = 5001
# Swarm stops a task this long after taking it out of DNS (moby's gossip convergence delay).
SWARM_STOP_DELAY = 2.0
SWARM_PTR = (b"lab_server", b"2", b"k3x9q0c7w1", b"lab_ticsnet", b"")


@pytest.fixture
def nameserver() -> Iterator[FakeDns]:
    server = FakeDns().start()
    yield server
    server.close()


@pytest.fixture
async def discovery(nameserver: FakeDns) -> AsyncIterator[DnsDiscovery]:
    config = BalancerConfig(
        backends=[],
        discover="dns",
        discover_dns=parse_nameserver(nameserver.address),
        discover_interval=0.1,
    )
    found = DnsDiscovery(Balancer(config), config)
    yield found
    await found.stop()


def urls(discovery: DnsDiscovery) -> dict[str, str]:
    return {server.name: server.url for server in discovery.balancer.servers}


def discovery_events(discovery: DnsDiscovery) -> list[dict[str, object]]:
    return [e for e in discovery.balancer.events.since(0) if e["kind"] == "discovery"]


# Names -------------------------------------------------------------------------------------


def test_names_come_from_the_pointer_record_or_the_address() -> None:
    assert base_name("tasks.server") == "server"
    assert base_name("server.ticslab.svc.cluster.local.") == "server"
    assert base_name("9lives") == "server"  # not an identifier: the default
    assert ptr_names("server", SWARM_PTR) == ["server-2", "server-2-k3x9q"]  # SERVICE-SLOT
    statefulset = (b"server-0", b"server", b"ticslab", b"svc", b"cluster", b"local", b"")
    assert ptr_names("server", statefulset) == ["server-0"]
    deployment = (b"10-0-0-5", b"server", b"ticslab", b"svc", b"cluster", b"local", b"")
    assert ptr_names("server", deployment) == ["server-10-0-0-5"]
    assert server_name("server", "10.0.0.5", None, ()) == "server-10-0-0-5"
    ipv6 = server_name("server", "fd00:1234:5678::abcd:ef01:2345", None, ())
    assert ipv6 is not None and len(ipv6) <= 32
    # A name another server has already (the old task of a slot, still draining): the next
    # form, never a second server-2.
    assert server_name("server", "10.0.0.7", SWARM_PTR, {"server-2"}) == "server-2-k3x9q"
    taken = {"server-2", "server-2-k3x9q"}
    assert server_name("server", "10.0.0.7", SWARM_PTR, taken) == "server-10-0-0-7"


@pytest.mark.parametrize(
    "labels",
    [
        (b"server\x1b]0;pwned\x07", b"2", b"t", b"n", b""),  # a terminal escape
        (b"evil\xe2\x80\xaeX", b"ns", b""),  # a bidi override
        (b"a b", b""),
        (b"x" * 40, b""),  # longer than a server name may be
        (b"",),
    ],
)
def test_a_hostile_pointer_record_gives_the_address_name(labels: tuple[bytes, ...]) -> None:
    assert ptr_names("server", labels) == []
    assert server_name("server", "127.0.0.2", labels, ()) == "server-127-0-0-2"


def test_the_nameserver_flag_takes_an_address_and_a_port() -> None:
    assert parse_nameserver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_nameserver("127.0.0.11") == ("127.0.0.11", 53)
    assert parse_nameserver("[::1]:5353") == ("::1", 5353)
    for bad in ("dns.example:53", "127.0.0.1:0", "127.0.0.1:http", ""):
        with pytest.raises(ValueError, match="ADDRESS"):
            parse_nameserver(bad)


# In process --------------------------------------------------------------------------------


@pytest.mark.smoke
async def test_new_addresses_join_as_new_and_vanished_ones_are_drained_and_removed(
    nameserver: FakeDns, discovery: DnsDiscovery
) -> None:
    nameserver.records[NAME] = ["127.0.0.2"]
    nameserver.pointers["127.0.0.2"] = SWARM_PTR
    await discovery.start()
    assert urls(discovery) == {"server-2": f"http://127.0.0.2:{PORT}"}
    assert discovery.balancer.get("server-2").state == NEW  # no traffic before a check
    nameserver.records[NAME] = ["127.0.0.2", "127.0.0.3"]
    await wait_until_async(lambda: len(urls(discovery)) == 2, timeout=5)
    assert urls(discovery)["server-127-0-0-3"] == f"http://127.0.0.3:{PORT}"
    # The same address keeps its name across polls, even once its PTR record says otherwise.
    nameserver.pointers["127.0.0.2"] = (b"lab_server", b"9", b"x", b"n", b"")
    busy = discovery.balancer.get("server-127-0-0-3")
    busy.in_flight = 1  # a request still running on it
    nameserver.records[NAME] = ["127.0.0.2"]
    await wait_until_async(lambda: busy.state == DRAIN, timeout=5)
    await wait_until_async(lambda: discovery.leaving, timeout=5)
    assert "server-127-0-0-3" in urls(discovery)  # kept until its request ends
    busy.in_flight = 0
    await wait_until_async(lambda: list(urls(discovery)) == ["server-2"], timeout=5)
    actions = [(e["server"], e["action"]) for e in discovery_events(discovery)]
    assert actions == [
        ("server-2", "added"),
        ("server-127-0-0-3", "added"),
        ("server-127-0-0-3", "removed"),
    ]


async def test_an_address_back_before_its_removal_returns_to_rotation(
    nameserver: FakeDns, discovery: DnsDiscovery
) -> None:
    nameserver.records[NAME] = ["127.0.0.2", "127.0.0.3"]
    await discovery.start()
    flapping = discovery.balancer.get("server-127-0-0-3")
    flapping.in_flight = 1
    nameserver.records[NAME] = ["127.0.0.2"]
    await wait_until_async(lambda: flapping.state == DRAIN, timeout=5)
    nameserver.records[NAME] = ["127.0.0.2", "127.0.0.3"]
    await wait_until_async(lambda: flapping.state != DRAIN, timeout=5)
    assert not discovery.leaving and len(urls(discovery)) == 2


@pytest.mark.smoke
@pytest.mark.parametrize(
    "failure", ["servfail", pytest.param("silent", marks=pytest.mark.slow), "nxdomain", "empty"]
)
async def test_a_failed_lookup_keeps_every_server_and_says_so_once(
    nameserver: FakeDns, discovery: DnsDiscovery, failure: str
) -> None:
    nameserver.records[NAME] = ["127.0.0.2", "127.0.0.3"]
    await discovery.start()
    before = urls(discovery)
    polls = nameserver.queries
    if failure in ("servfail", "silent"):
        nameserver.mode = failure
    elif failure == "empty":
        nameserver.records[NAME] = []
    else:
        del nameserver.records[NAME]
    # Several polls (two queries each, a timeout 1 s each when silent) with no answer.
    await wait_until_async(lambda: nameserver.queries >= polls + 6, timeout=10)
    assert urls(discovery) == before
    assert all(server.state == NEW for server in discovery.balancer.servers)  # not drained
    nameserver.mode, nameserver.records[NAME] = "answer", ["127.0.0.2", "127.0.0.3"]
    await wait_until_async(lambda: not discovery.failing, timeout=5)
    said = [e for e in discovery_events(discovery) if e["server"] is None]
    assert [e["action"] for e in said] == ["lookup_failed", "lookup_recovered"]
    assert said[0]["kept"] == "server-127-0-0-2, server-127-0-0-3"
    for lang in ("en", "es"):
        sentence = EventText(lang).sentence(said[0])
        assert NAME in sentence and "server-127-0-0-2" in sentence


async def test_aaaa_records_are_servers_too_and_a_failing_aaaa_costs_no_server(
    nameserver: FakeDns, discovery: DnsDiscovery
) -> None:
    nameserver.records[NAME] = ["127.0.0.2", "fd00::5"]
    await discovery.start()
    assert sorted(urls(discovery).values()) == [
        f"http://127.0.0.2:{PORT}",
        f"http://[fd00::5]:{PORT}",
    ]
    nameserver.servfail = {"AAAA"}
    polls = nameserver.queries
    await wait_until_async(lambda: nameserver.queries >= polls + 6, timeout=5)
    assert len(urls(discovery)) == 2  # its last answer counts
    said = [e for e in discovery_events(discovery) if e["action"] == "lookup_failed"]
    assert len(said) == 1 and said[0]["reason"].startswith("AAAA: ")


async def test_a_name_that_never_answered_is_told_and_followed_once_it_does(
    nameserver: FakeDns, discovery: DnsDiscovery
) -> None:
    await discovery.start()  # NXDOMAIN at start: not fatal (Swarm starts the servers later)
    assert discovery.failing and not discovery.balancer.servers
    nameserver.records[NAME] = ["127.0.0.2"]
    await wait_until_async(lambda: len(urls(discovery)) == 1, timeout=5)


async def test_no_more_servers_than_the_bound(
    nameserver: FakeDns, discovery: DnsDiscovery, caplog: pytest.LogCaptureFixture
) -> None:
    nameserver.records[NAME] = [f"127.0.1.{n}" for n in range(1, MAX_SERVERS + 6)]
    nameserver.records[NAME].append("0.0.0.0")  # never a server's address
    await discovery.start()
    for _ in range(3):
        await discovery.poll()
    assert [r.message for r in caplog.records if "gave 0.0.0.0" in r.message] == [
        "dns discovery: tasks.server gave 0.0.0.0, left out"  # once, not at every poll
    ]
    assert len(discovery.balancer.servers) == MAX_SERVERS
    assert "http://0.0.0.0:5001" not in urls(discovery).values()
    limits = [e for e in discovery_events(discovery) if e["action"] == "limit_reached"]
    assert len(limits) == 1 and limits[0]["count"] == MAX_SERVERS


async def test_a_hostile_pointer_answer_never_reaches_a_name(
    nameserver: FakeDns, discovery: DnsDiscovery
) -> None:
    nameserver.records[NAME] = ["127.0.0.2"]
    nameserver.pointers["127.0.0.2"] = (b"server\x1b[2J\xe2\x80\xae", b"1", b"t", b"n", b"")
    await discovery.start()
    assert list(urls(discovery)) == ["server-127-0-0-2"]
    for event in discovery.balancer.events.since(0):
        assert printable(str(event)) == str(event)


# A real balancer in front of real task servers -------------------------------------------


def server_on(address: str, port: int, tasks_file: Path) -> ServiceProcess:
    """A task server listening on ``address`` (127.0.0.x: Linux routes all of 127/8 to lo)."""
    name = f"server-{address.replace('.', '-')}"
    args = ["taskserver", "--name", name, "--host", address, "--port", str(port)]
    process = ServiceProcess([*args, "--tasks-file", str(tasks_file)], port)
    process.url = f"http://{address}:{port}"
    return process


class Traffic:
    """Steady GETs and POSTs through the balancer in a thread, bounded in count and time;
    every answer that is not 2xx is a failure a client would have seen."""

    def __init__(self, url: str, seconds: float = 30.0, most: int = 3000) -> None:
        self.url, self.seconds, self.most = url, seconds, most
        self.answered: list[str] = []
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        with httpx.Client(base_url=self.url, timeout=5) as http:
            for n in range(self.most):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                try:
                    if n % 2:
                        answer = http.post("/tareas", json={"title": f"t{n}"})
                    else:
                        answer = http.get("/tareas?limit=5")
                except httpx.HTTPError as error:
                    self.failed.append(repr(error))
                    continue
                if answer.is_success:
                    self.answered.append(answer.headers.get("X-Upstream-Server", "?"))
                else:
                    self.failed.append(f"{answer.status_code} {answer.text[:200]}")
                self._stop.wait(0.01)


def states(balancer: ServiceProcess) -> dict[str, str]:
    return {s["name"]: s["state"] for s in status_of(balancer)["servers"]}


@pytest.mark.slow
def test_servers_follow_dns_under_traffic_with_no_failed_request(
    nameserver: FakeDns, tmp_path: Path
) -> None:
    """As Swarm rolls a task: the new one enters DNS, the old one leaves it and is stopped
    ``SWARM_STOP_DELAY`` later; with retries off, a request sent to it then would fail."""
    port = free_port()
    tasks_file = tmp_path / "tasks.json"
    servers = {a: server_on(a, port, tasks_file) for a in ("127.0.0.2", "127.0.0.3")}
    nameserver.records[NAME] = ["127.0.0.2"]
    nameserver.pointers["127.0.0.2"] = SWARM_PTR
    flags = ["--discover", "dns", "--discover-dns", nameserver.address]
    flags += ["--discover-port", str(port), "--discover-interval", "0.2", "--retries", "0"]
    balancer = balancer_process([], "round_robin", *flags)
    try:
        for server in servers.values():
            server.start()
        balancer.start()
        wait_until(lambda: states(balancer) == {"server-2": "UP"}, what="server-2 UP")
        with Traffic(balancer.url) as traffic:
            nameserver.records[NAME] = ["127.0.0.2", "127.0.0.3"]
            wait_until(lambda: "server-127-0-0-3" in traffic.answered, timeout=15)
            nameserver.records[NAME] = ["127.0.0.3"]
            stop = threading.Timer(SWARM_STOP_DELAY, servers["127.0.0.2"].close)
            stop.start()
            wait_until(lambda: list(states(balancer)) == ["server-127-0-0-3"], timeout=15)
            stop.join(timeout=15)
            count = len(traffic.answered)
            wait_until(lambda: len(traffic.answered) > count + 20, timeout=15)
        assert traffic.failed == []
        events = httpx.get(balancer.url + "/events", timeout=5).json()["events"]
        told = [(e["server"], e.get("action") or e.get("to")) for e in events]
        joined = told.index(("server-127-0-0-3", "added"))
        assert told[joined + 1 :].index(("server-127-0-0-3", "UP")) >= 0  # NEW -> UP
        drained = told.index(("server-2", "DRAIN"))
        assert told.index(("server-2", "removed")) > drained
    finally:
        balancer.close()
        for server in servers.values():
            server.close()
