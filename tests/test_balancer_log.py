"""The failover story in a real balancer's log (handout steps 3 and 6: "observa los logs"):
a killed task server's DOWN line and its UP line after a restart, in Spanish and English,
retries that hid a failure summed up in one line, and a hostile detail printed harmless.

Each test runs a real ``ticslab balancer`` process and reads what it wrote to stderr, the
stream uvicorn writes to (``ticslab up`` relays it; Docker keeps it for ``logs``).
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from backends import RawBackend
from support import ACTED_ON, ServiceProcess, taskserver, wait_until
from test_balancer_helpers import EchoBackend, balancer_process, status_of, task_servers

pytestmark = pytest.mark.slow

# One line of the balancer's own log: its time, uvicorn's level prefix, the sentence.
LINE = r"^\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d {level}: +{sentence}$"
SUMMARY = re.compile(r"^.* INFO: +(\d+) solicitud(?:es)? reintentadas? en server2 ", re.M)


def logged(balancer: ServiceProcess, level: str, sentence: str) -> bool:
    """Whether the balancer wrote ``sentence`` (a regular expression) at ``level``."""
    pattern = LINE.format(level=level, sentence=sentence)
    return re.search(pattern, balancer.log(), re.MULTILINE) is not None


SAID = {
    "es": (
        r"server1 UP → DOWN: conexión rechazada( \(2 chequeos fallidos seguidos\)| con tráfico "
        r"real)",
        r"server1 DOWN → UP: chequeos superados seguidos: 2",
    ),
    "en": (
        r"server1 UP → DOWN: (2 checks failed: connection refused|connect refused on live "
        r"traffic)",
        r"server1 DOWN → UP: 2 checks passed",
    ),
}


@pytest.mark.parametrize("lang", ["es", "en"])
def test_a_killed_server_goes_down_and_comes_back_in_the_log(tmp_path: Path, lang: str) -> None:
    servers = task_servers(tmp_path)
    backends = [("server1", servers[0].url), ("server2", servers[1].url)]
    balancer = balancer_process(backends, "round_robin", "--lang", lang).start()
    restarted: ServiceProcess | None = None
    try:
        down, up = SAID[lang]
        servers[0].kill()
        wait_until(lambda: logged(balancer, "WARNING", down), what=f"{down!r} in the log")
        assert not logged(balancer, "INFO", up)
        restarted = taskserver("server1", tmp_path / "tasks.json", port=servers[0].port).start()
        wait_until(lambda: logged(balancer, "INFO", up), what=f"{up!r} in the log")
        assert not ACTED_ON.search(balancer.log().replace("\n", ""))
    finally:
        balancer.close()
        for server in [*servers, *([restarted] if restarted else [])]:
            server.close()


def test_retries_that_hid_a_failure_are_one_summary_line_not_one_per_request() -> None:
    """server1 cuts every answer (a crash mid-request, as the client would see it) but passes
    its health checks; each request it gets is retried on server2 and the client never
    knows. The log sums them up: one line for a burst, with the count /status gives."""
    broken = RawBackend(lambda request: lambda sock: sock.close()).start()
    fine = EchoBackend("server2").start()
    backends = [("server1", broken.url), ("server2", fine.url)]
    balancer = balancer_process(backends, "round_robin", "--lang", "es", "--fall", "1000")
    balancer.start()

    def retries() -> int:
        return next(s["retries"] for s in status_of(balancer)["servers"] if s["name"] == "server1")

    try:
        with httpx.Client(base_url=balancer.url, timeout=10) as client:
            # A first retry, and its summary: the burst then starts just after a summary, so
            # it is told whole in the next one, however loaded the machine.
            wait_until(lambda: client.get("/x").status_code == 200 and retries(), what="a retry")
            wait_until(lambda: SUMMARY.search(balancer.log()), what="the first summary")
            before = retries()
            for _ in range(20):
                assert client.get("/x").status_code == 200
        burst = retries() - before
        assert burst >= 5  # round robin sent every other request to server1 first
        wait_until(lambda: len(SUMMARY.findall(balancer.log())) >= 2, what="the burst's summary")
        counts = [int(count) for count in SUMMARY.findall(balancer.log())]
        assert counts[1] == burst, balancer.log()
        assert len(counts) == 2  # not one line per request
        line = f"{burst} solicitudes reintentadas en server2 en los últimos 5 s (fallaron "
        assert f"{line}primero en server1)" in balancer.log()
    finally:
        balancer.close()
        broken.close()
        fine.close()


def test_a_hostile_detail_is_printed_harmless_and_marked_as_the_systems_words() -> None:
    """A server's /health may say anything: escape codes in its reason reach the log written
    out, never obeyed, and in Spanish marked as the system's own words."""
    echo = EchoBackend("server1").start()
    echo.health_error = "disco \x1b[2J\x1b]0;pwned\x07\u202elleno"
    balancer = balancer_process([("server1", echo.url)], "round_robin", "--lang", "es").start()
    try:
        echo.healthy = False
        said = (
            r"server1 UP → DOWN: respondió 503: \(mensaje del sistema\) disco "
            r"\\x1b\[2J\\x1b\]0;pwned\\x07\\u202elleno \(2 chequeos fallidos seguidos\)"
        )
        wait_until(lambda: logged(balancer, "WARNING", said), what="the hostile DOWN line")
        assert not ACTED_ON.search(balancer.log().replace("\n", ""))
    finally:
        balancer.close()
        echo.close()
