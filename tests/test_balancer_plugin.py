"""A student's own algorithm (``--algorithm FILE.py:CLASS``): loaded and checked at start,
one more algorithm once loaded, and never the reason a request fails or the balancer stops."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import textwrap
from collections import Counter
from pathlib import Path

import httpx
import pytest
from support import TICSLAB
from test_balancer_helpers import TOKEN, EchoBackend, balancer_process, status_of

from services.balancer import cli as balancer_cli
from services.balancer import plugin
from services.balancer.balancer import Balancer
from services.balancer.config import BalancerConfig
from services.balancer.plugin import PluginError
from services.balancer.server import Server

EXAMPLE = Path(__file__).parent.parent / "docs" / "examples" / "mi_algoritmo.py"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def write(folder: Path, source: str, name: str = "mine.py") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


def pool(*names: str) -> list[Server]:
    return [Server(name, f"http://127.0.0.1:{5001 + n}") for n, name in enumerate(names)]


# Loading: every start-time mistake is one line naming the file (and the line) --------------

PICK = ["def pick(self, servers, client):", "    return servers[0]"]


def mine(*body: str) -> str:
    """``class Mine:`` with these lines, indented, as its body."""
    return "class Mine:\n" + "".join(f"    {line}\n" for line in body)


# Case: (source, what the message says after the file name)
BROKEN = {
    "syntax error": (mine("def pick(self, servers, client)"), ":2: syntax error"),
    "raises while loading": (
        "import os\nLIMIT = int('ten')\n",
        ":2: ValueError: invalid literal for int() with base 10: 'ten' while loading",
    ),
    "no such class": ("class Other:\n    pass\n", ": there is no Mine in it (it defines Other)"),
    "not a class": ("def Mine(servers, client):\n    pass\n", ": Mine is a function, not a class"),
    "no pick": (
        mine("def choose(self, servers, client):", "    pass"),
        ":1: class Mine has no method pick",
    ),
    "async pick": (mine("async " + PICK[0], PICK[1]), ":1: Mine.pick must be a plain def"),
    "pick without client": (
        mine("def pick(self, servers):", "    pass"),
        ":2: Mine.pick must take (self, servers, client)",
    ),
    "constructor raises": (
        mine("def __init__(self):", "    self.first = {}['nothing']", *PICK),
        ":3: Mine() raised KeyError: 'nothing'",
    ),
    "constructor needs arguments": (
        mine("def __init__(self, size):", "    pass", *PICK),
        ":1: Mine() raised TypeError: ",
    ),
    "a built-in's name": (
        mine("name = 'round_robin'", *PICK),
        ":1: 'round_robin' is a built-in algorithm's name",
    ),
    "name not a text": (
        mine("name = 3", *PICK),
        ":1: Mine.name must be 1 to 40 letters, digits, _ or -, not 3",
    ),
    "name with a space": (
        mine("name = 'ip_hash '", *PICK),
        ":1: Mine.name must be 1 to 40 letters, digits, _ or -, not 'ip_hash '",
    ),
    "name that raises": (
        "class Meta(type):\n"
        "    @property\n"
        "    def name(cls):\n"
        "        raise RuntimeError('no')\n"
        "class Mine(metaclass=Meta):\n"
        "    def pick(self, servers, client):\n"
        "        return servers[0]\n",
        ":4: RuntimeError: no while checking it",
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_plugin_is_one_line_naming_its_file_and_line(tmp_path: Path, case: str) -> None:
    source, expected = BROKEN[case]
    path = write(tmp_path, source)
    with pytest.raises(PluginError) as refused:
        plugin.load(f"{path}:Mine")
    message = str(refused.value)
    assert message.startswith(f"{path}{expected}"), message
    assert "\n" not in message and "Traceback" not in message


def test_a_missing_file_a_non_python_file_and_a_missing_class_are_named(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match=re.escape(f"{tmp_path / 'gone.py'}: no such file")):
        plugin.load(f"{tmp_path / 'gone.py'}:Mine")
    text = tmp_path / "mine.txt"
    text.write_text("class Mine: pass\n")
    with pytest.raises(
        PluginError, match=r"mine\.txt: an algorithm is a Python file, ending in \.py"
    ):
        plugin.load(f"{text}:Mine")
    with pytest.raises(PluginError, match="write your algorithm as FILE\\.py:CLASS"):
        plugin.load(f"{tmp_path / 'mine.py'}:")
    with pytest.raises(ValueError, match=r"for your own class write mine\.py:ClassName"):
        plugin.choose("mine.py")
    assert plugin.choose("ip_hash") == ("ip_hash", None)


def test_an_error_message_from_the_students_code_is_printable(tmp_path: Path) -> None:
    path = write(tmp_path, "raise RuntimeError('\\x1b[2J gone')\n")
    with pytest.raises(PluginError) as refused:
        plugin.load(f"{path}:Mine")
    assert str(refused.value) == f"{path}:1: RuntimeError: \\x1b[2J gone while loading"


def test_a_relative_path_is_made_absolute_for_the_balancer_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert plugin.absolute("algos/mine.py:Mine") == f"{tmp_path}/algos/mine.py:Mine"
    assert plugin.absolute("round_robin") == "round_robin"


# Run time: a failed pick never costs a request -------------------------------------------------

RAISES = """\
    class Raises:
        name = "raises"

        def pick(self, servers, client):
            return servers[len(servers) // 0]
"""
RETURNS_A_NAME = """\
    class ReturnsAName:
        def pick(self, servers, client):
            return servers[0].name
"""


def test_a_failing_pick_is_reported_with_its_line_and_round_robin_answers(tmp_path: Path) -> None:
    raising = plugin.load(f"{write(tmp_path, RAISES)}:Raises")
    wrong = plugin.load(f"{write(tmp_path, RETURNS_A_NAME, 'name.py')}:ReturnsAName")
    reports: list[tuple[str, str | None, str | None]] = []
    servers = pool("a", "b")
    for loaded in (raising, wrong):
        algorithm = loaded.start(lambda *report: reports.append(report))
        assert [algorithm.pick(servers, "c").name for _ in range(4)] == ["a", "b", "a", "b"]
    where, error, returned = reports[0]
    assert where == f"{tmp_path}/mine.py:5" and returned is None
    assert error is not None and error.startswith("ZeroDivisionError")
    assert reports[4] == (f"{tmp_path}/name.py:2", None, "'a'")
    assert len(set(reports)) == 2 and wrong.name == "ReturnsAName"


ODD_PICKS = {
    "exit": ("import sys\n", "sys.exit(3)", "SystemExit: 3"),
    "Ctrl+C": ("", "raise KeyboardInterrupt", "KeyboardInterrupt"),
    "a message that raises": (
        "class Unprintable(Exception):\n    def __str__(self):\n        raise ValueError('no')\n",
        "raise Unprintable()",
        "Unprintable",
    ),
    "a long message": ("", "raise ValueError('x' * 100_000)", "ValueError: " + "x" * 300 + "..."),
    "emptied servers": ("", "servers.clear()", None),
    "a server of its own": (
        "", "servers.append(object()); return servers[-1]", None
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", ODD_PICKS)
def test_an_odd_pick_costs_no_request(tmp_path: Path, case: str) -> None:
    """exit(), Ctrl+C, an unprintable or huge error, or a pick that changes the list it was
    given: round robin still answers from the servers the balancer offered."""
    before, body, error = ODD_PICKS[case]
    source = f"{before}\nclass Odd:\n    def pick(self, servers, client):\n        {body}\n"
    reports: list[tuple[str, str | None, str | None]] = []
    algorithm = plugin.load(f"{write(tmp_path, source)}:Odd").start(
        lambda *report: reports.append(report)
    )
    servers = pool("a", "b")
    assert algorithm.pick(servers, "c") in servers
    assert len(servers) == 2 and len(reports) == 1
    if error is not None:
        assert reports[0][1] == error


def told(balancer: Balancer) -> list[str]:
    return [e["reason"] for e in balancer.events.since(0) if e["kind"] == "algorithm_error"]


def test_failures_are_all_counted_and_each_distinct_one_told_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = plugin.load(f"{write(tmp_path, RAISES)}:Raises")
    backends = [("a", "http://127.0.0.1:5001"), ("b", "http://127.0.0.1:5002")]
    config = BalancerConfig(backends=backends, algorithm="raises", plugin=loaded)
    balancer = Balancer(config)
    assert balancer.algorithm_names[-1] == "raises"
    for _ in range(100):
        assert balancer.choose([], "c") is not None
    events = [e for e in balancer.events.since(0) if e["kind"] == "algorithm_error"]
    assert balancer.algorithm_errors == 100 and len(events) == 1
    assert events[0]["where"] == f"{tmp_path}/mine.py:5" and events[0]["algorithm"] == "raises"
    balancer.record_algorithm_error(f"{tmp_path}/mine.py:5", None, "None")
    assert len(told(balancer)) == 1  # another failure within 10 s of the last one told
    monkeypatch.setattr("services.balancer.balancer.ALGORITHM_ERROR_QUIET", 0.0)
    eager = Balancer(config)
    for _ in range(3):
        eager.choose([], "c")
    eager.set_algorithm("round_robin")
    eager.set_algorithm("raises")  # switched to again: its failure is told again, once
    eager.choose([], "c")
    eager.choose([], "c")
    eager.record_algorithm_error(f"{tmp_path}/mine.py:5", None, "None")
    assert len(told(eager)) == 3 and eager.algorithm_errors == 6
    assert told(eager)[1] == told(eager)[0]
    assert told(eager)[2].endswith(
        "pick returned None, not one of the servers it was given; round robin answered instead"
    )


def test_the_template_in_docs_picks_the_less_loaded_of_two() -> None:
    loaded = plugin.load(f"{EXAMPLE}:MiAlgoritmo")
    assert loaded.name == "dos_al_azar"
    reports: list[object] = []
    algorithm = loaded.start(lambda *report: reports.append(report))
    servers = pool("a", "b", "c")
    picks = Counter(algorithm.pick(servers, "10.0.0.1").name for _ in range(300))
    assert set(picks) == {"a", "b", "c"}
    servers[0].in_flight = 5  # a loses every pair it is in
    assert "a" not in {algorithm.pick(servers, "c").name for _ in range(100)}
    assert algorithm.pick(servers[:1], "c") is servers[0] and reports == []


# Read-only views and slow picks (issue 23, item 20) --------------------------------------------

TAMPERS = """\
    class Tampers:
        def pick(self, servers, client):
            target = servers[0]
            for change in (
                lambda: setattr(target, "name", "hacked"),
                lambda: setattr(target, "weight", 10**9),
                lambda: setattr(target, "state", "WEIRD"),
                lambda: setattr(target, "in_flight", -5),
                lambda: delattr(target, "name"),
            ):
                try:
                    change()
                except AttributeError:
                    pass
            return target
"""
FAIREST = """\
    class Fairest:
        def __init__(self):
            self.picked = {}

        def pick(self, servers, client):
            chosen = min(servers, key=lambda server: self.picked.get(server, 0))
            self.picked[chosen] = self.picked.get(chosen, 0) + 1
            return chosen
"""
SLOW = """\
    import time

    class Slow:
        def pick(self, servers, client):
            time.sleep(0.06)
            return servers[-1]
"""


def plugin_balancer(path: Path, cls: str) -> Balancer:
    loaded = plugin.load(f"{path}:{cls}")
    backends = [("server1", "http://127.0.0.1:5001"), ("server2", "http://127.0.0.1:5002")]
    return Balancer(BalancerConfig(backends=backends, algorithm=loaded.name, plugin=loaded))


def test_a_pick_sees_read_only_views_and_cannot_change_the_balancer(tmp_path: Path) -> None:
    """Renaming a server, a weight of 10**9, a state WEIRD: each assignment is refused, and
    the pick's answer (a view) still names a real server."""
    balancer = plugin_balancer(write(tmp_path, TAMPERS), "Tampers")
    assert [balancer.choose([], "c").name for _ in range(3)] == ["server1"] * 3
    one = balancer.get("server1")  # still found by its name (a control action would be too)
    assert (one.name, one.weight, one.state, one.in_flight) == ("server1", 1, "UP", 0)
    assert balancer.algorithm_errors == 0


def test_views_of_one_server_are_equal_from_one_pick_to_the_next(tmp_path: Path) -> None:
    """A plugin may remember servers as dict keys: the fairest plugin alternates."""
    balancer = plugin_balancer(write(tmp_path, FAIREST), "Fairest")
    picks = Counter(balancer.choose([], "c").name for _ in range(10))
    assert picks == {"server1": 5, "server2": 5} and balancer.algorithm_errors == 0


def test_a_slow_pick_is_told_once_while_its_answer_is_used(tmp_path: Path) -> None:
    balancer = plugin_balancer(write(tmp_path, SLOW), "Slow")
    assert [balancer.choose([], "c").name for _ in range(3)] == ["server2"] * 3
    slow = [e for e in balancer.events.since(0) if e["kind"] == "algorithm_slow"]
    assert len(slow) == 1 and balancer.algorithm_errors == 0  # rate-limited, not a failure
    assert slow[0]["where"] == f"{tmp_path}/mine.py:4" and slow[0]["milliseconds"] >= 50


# A real balancer ---------------------------------------------------------------------------------

ALWAYS_SERVER2 = """\
    class AlwaysTheSecond:
        name = "always_second"

        def pick(self, servers, client):
            return next((s for s in servers if s.name == "server2"), servers[0])
"""


def upstreams(url: str, count: int) -> Counter[str]:
    """Which server answered each of ``count`` GETs; every one must be answered (200)."""
    answered: Counter[str] = Counter()
    with httpx.Client(base_url=url, timeout=5) as client:
        for _ in range(count):
            answer = client.get("/echo")
            assert answer.status_code == 200, answer.text
            answered[answer.headers["X-Upstream-Server"]] += 1
    return answered


def switch(url: str, name: str) -> httpx.Response:
    return httpx.put(url + "/control/algorithm", json={"algorithm": name}, headers=AUTH)


@pytest.mark.slow  # 1.4-3 s; .ci/run runs it: the default run stays near 3 minutes
def test_a_plugin_runs_in_a_real_balancer_and_switches_live(
    tmp_path: Path, echoes: list[EchoBackend]
) -> None:
    path = write(tmp_path, ALWAYS_SERVER2)
    backends = [(e.name, e.url) for e in echoes]
    balancer = balancer_process(backends, f"{path}:AlwaysTheSecond").start()
    try:
        status = status_of(balancer)
        assert status["algorithm"] == "always_second"
        assert status["algorithms"][-1] == "always_second" and len(status["algorithms"]) == 6
        assert upstreams(balancer.url, 10) == {"server2": 10}
        page = httpx.get(balancer.url + "/status", headers={"Accept": "text/html"}).text
        assert "<b>always_second</b>" in page
        assert switch(balancer.url, "round_robin").json()["previous"] == "always_second"
        assert upstreams(balancer.url, 10) == {"server1": 5, "server2": 5}
        assert switch(balancer.url, "always_second").status_code == 200
        assert upstreams(balancer.url, 10) == {"server2": 10}
        assert switch(balancer.url, str(path) + ":AlwaysTheSecond").status_code == 400
        assert status_of(balancer)["algorithm_errors"] == 0
    finally:
        balancer.close()


@pytest.mark.parametrize(
    ("source", "class_name", "line", "said"),
    [
        (RAISES, "Raises", 5, ("error", "ZeroDivisionError: ")),
        pytest.param(
            RETURNS_A_NAME, "ReturnsAName", 2, ("returned", "'server1'"), marks=pytest.mark.slow
        ),  # the Balancer-level tests cover a wrong return; this is the real process's
    ],
)
def test_a_failing_pick_in_a_real_balancer_costs_no_request(
    tmp_path: Path,
    echoes: list[EchoBackend],
    source: str,
    class_name: str,
    line: int,
    said: tuple[str, str],
) -> None:
    path = write(tmp_path, source)
    backends = [(e.name, e.url) for e in echoes]
    balancer = balancer_process(backends, f"{path}:{class_name}").start()
    try:
        assert upstreams(balancer.url, 20) == {"server1": 10, "server2": 10}  # round robin
        events = httpx.get(balancer.url + "/events").json()["events"]
        failed = [event for event in events if event["kind"] == "algorithm_error"]
        assert len(failed) == 1
        assert failed[0]["where"] == f"{path}:{line}"
        field, start = said
        assert failed[0][field].startswith(start)
        assert status_of(balancer)["algorithm_errors"] == 20
        assert httpx.get(balancer.url + "/health").status_code == 200
        assert balancer.proc is not None and balancer.proc.poll() is None
    finally:
        balancer.close()


def test_the_balancer_refuses_a_broken_plugin_with_exit_2_and_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "import json\n\nSETTINGS = json.loads('{')\n", "bad.py")
    done = subprocess.run(
        [*TICSLAB, "balancer", "--algorithm", f"{path}:X"],
        env={**os.environ, "TICSLAB_TOKEN": TOKEN},  # --token would add its warning to stderr
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"ticslab balancer: {path}:3: JSONDecodeError: ")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_the_environment_names_a_plugin_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, ALWAYS_SERVER2)
    monkeypatch.setenv("TICSLAB_ALGORITHM", f"{path}:AlwaysTheSecond")
    parser = argparse.ArgumentParser()
    balancer_cli.add_arguments(parser)
    config = balancer_cli.config_from_args(parser.parse_args([]))
    assert config.algorithm == "always_second"
    assert config.plugin is not None and config.plugin.path == path
    config = balancer_cli.config_from_args(parser.parse_args(["--algorithm", "ip_hash"]))
    assert (config.algorithm, config.plugin) == ("ip_hash", None)  # the flag wins
