"""Rollouts (``POST /control/rollout``): on real stacks of ``ticslab up`` processes, a rolling
rollout under steady traffic fails nothing and gives every server a new process; restarting
everything at once is seen by the clients; a new version that never becomes healthy stops the
rollout at its first server. Bad requests get their clear 4xx, never a 500."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import (
    ServiceProcess,
    free_port,
    free_run,
    taskserver_pair,
    wait_until,
    wait_until_async,
)
from test_balancer_helpers import TOKEN, balancer_process

from services.balancer.balancer import Balancer
from services.balancer.config import BalancerConfig
from services.balancer.drivers.docker import recreation
from services.balancer.journal import level
from services.balancer.messages import EventText
from services.balancer.rollout import Rollouts, plan_from
from services.cli import main
from services.experiment.lab import Lab, throwaway_stack
from services.experiment.rollout import RolloutSettings, load_through_rollout, run
from services.launcher.logs import FileLogs
from services.launcher.stack import Stack, StackOptions
from services.taskserver.options import options_problem

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def balancer() -> Iterator[ServiceProcess]:
    """A real balancer with no driver, its servers on ports nobody listens on."""
    backends = [("server1", f"http://127.0.0.1:{free_port()}")]
    process = balancer_process(backends).start()
    yield process
    process.close()


def test_before_the_first_rollout_get_answers_null(balancer: ServiceProcess) -> None:
    answer = httpx.get(balancer.url + "/control/rollout", timeout=5)
    assert answer.status_code == 200 and answer.json() == {"rollout": None}


def test_a_rollout_without_the_token_is_refused(balancer: ServiceProcess) -> None:
    answer = httpx.post(balancer.url + "/control/rollout", json={"strategy": "rolling"})
    assert answer.status_code == 401 and answer.json()["code"] == "bad_token"


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({}, "strategy must be one of rolling, restart"),
        ({"strategy": "blue-green"}, "strategy must be one of"),
        ({"strategy": "rolling", "drain_seconds": 0}, "drain_seconds must be from 0.5 to 120"),
        ({"strategy": "rolling", "health_seconds": "10"}, "health_seconds must be a number"),
        ({"strategy": "rolling", "health_seconds": 301}, "health_seconds must be from 1 to 300"),
        ({"strategy": "rolling", "canary": True}, "unknown fields canary"),
        ({"strategy": "rolling", "options": "rm -rf /"}, "options must be a list"),
        ({"strategy": "rolling", "options": ["--tasks-file=/etc/passwd"]}, "each option is"),
        ({"strategy": "rolling", "options": ["--lang=es; rm -rf /"]}, "--lang needs a plain"),
        ({"strategy": "rolling", "options": ["--fault=hang"]}, "--fault needs a plain value"),
        ({"strategy": "rolling", "options": ["--lang=es", "--lang=en"]}, "once"),
        ([1, 2], "strategy must be one of"),
    ],
)
def test_a_bad_rollout_body_is_400_saying_what(
    balancer: ServiceProcess, body: Any, said: str
) -> None:
    answer = httpx.post(balancer.url + "/control/rollout", json=body, headers=AUTH, timeout=5)
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "bad_rollout_body" and said in answer.json()["detail"]


def test_a_body_that_is_not_json_is_400_in_spanish_too(balancer: ServiceProcess) -> None:
    headers = {**AUTH, "Accept-Language": "es"}
    answer = httpx.post(balancer.url + "/control/rollout", content=b"{", headers=headers, timeout=5)
    assert answer.status_code == 400 and answer.json()["error"].startswith("envía un objeto")


def test_without_a_driver_a_rollout_is_409_and_nothing_changes(balancer: ServiceProcess) -> None:
    url = balancer.url + "/control/rollout"
    answer = httpx.post(url, json={"strategy": "rolling"}, headers=AUTH, timeout=5)
    assert answer.status_code == 409 and answer.json()["code"] == "driver_unsupported"
    assert httpx.get(url, timeout=5).json() == {"rollout": None}


@pytest.mark.parametrize(
    "options",
    [[], ["--fault=unhealthy"], ["--lang=es", "--request-timeout=5", "--max-connections=200"]],
)
def test_allowed_options_pass(options: list[str]) -> None:
    assert options_problem(options) is None


class GapSeenOnce:
    """A driver whose restart leaves the server as the checks would after seeing the gap
    between the old process and the new once: one failed check, the old verdict standing."""

    name = "local"
    actions = ("restart",)

    def __init__(self, balancer: Balancer) -> None:
        self.balancer = balancer

    async def recreate(self, server: str, options: Sequence[str] | None) -> dict[str, Any]:
        one = self.balancer.get(server)
        self.balancer.record_check(one, False, None, "connection refused", 1.0)
        return {"result": "restarted", "process": "running", "pid": 1}


async def test_a_rolled_server_returns_on_checks_of_its_new_process_not_the_old_verdict(
    tmp_path: Path,
) -> None:
    """One failed check of the restart's gap used to leave the old "healthy" standing, so the
    rollout handed the server back at once and READY then read that failed check: the server
    went DOWN while the next one was drained, and every request got 503."""
    with taskserver_pair(tmp_path / "tasks.json") as (server1, server2):
        backends = [("server1", server1.url), ("server2", server2.url)]
        balancer = Balancer(BalancerConfig(backends=backends, fall=2, rise=2))
        rollouts = Rollouts(balancer, lambda: GapSeenOnce(balancer))  # type: ignore[arg-type]
        rollout = rollouts.start(plan_from({"strategy": "rolling", "health_seconds": 5}), None)
        for name in ("server1", "server2"):
            await wait_until_async(lambda n=name: (rollout.current, rollout.step) == (n, "health"))
            one = balancer.get(name)
            assert one.state == "DRAIN" and not one.healthy  # its probe answers; no check yet
            for _ in range(2):  # the checks of the new process, as the checker would run them
                balancer.record_check(one, True, 200, "200 OK", 1.0)
        await wait_until_async(lambda: rollout.state != "running")
        await rollouts.stop()
        assert rollout.state == "done", rollout.describe()
        assert [e for e in balancer.events.since(0) if e.get("to") == "DOWN"] == []
        assert [server.state for server in balancer.servers] == ["UP", "UP"]


def pids(lab: Lab) -> dict[str, int]:
    """Each task server's process id, as it says itself (``/info``)."""
    servers = lab.status()["servers"]
    return {s["name"]: httpx.get(s["url"] + "/info", timeout=5).json()["pid"] for s in servers}


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["rolling", "restart"])
def test_a_rollout_under_steady_traffic_gives_every_server_a_new_process(strategy: str) -> None:
    """Rolling: nothing failed, nothing lost, with the balancer's retries off (the drain
    alone keeps clients from seeing a restart). All at once: the clients saw it."""
    with throwaway_stack(retries=0) as lab:
        for server in lab.servers:
            lab.set_fault(server, "latency", ms=20)
        before = pids(lab)
        outcomes, rollout = load_through_rollout(lab, strategy, RolloutSettings(), 0)
        after = pids(lab)
        created = [outcome.task for outcome in outcomes if outcome.task is not None]
        failed = [o for o in outcomes if o.status == 0 or o.status >= 400]
        assert lab.lost(created) == 0
        assert rollout["state"] == "done", rollout
        assert all(before[name] != after[name] for name in lab.servers), (before, after)
        results = rollout["servers"]
        assert {name: results[name]["pid"] for name in lab.servers} == after
        if strategy == "rolling":
            assert failed == [] and len(created) > 50
            assert {s["name"]: s["state"] for s in lab.status()["servers"]} == {
                "server1": "UP",
                "server2": "UP",
            }
        else:
            assert len(failed) > 0


@pytest.mark.slow
def test_a_version_that_never_becomes_healthy_stops_the_rollout_at_its_first_server() -> None:
    with throwaway_stack() as lab:
        before = pids(lab)
        body = {"strategy": "rolling", "options": ["--fault=unhealthy"], "health_seconds": 2}
        started = lab.control("POST", "/control/rollout", body)["rollout"]
        assert started["state"] == "running" and started["options"] == ["--fault=unhealthy"]
        # While it runs, a second one is refused with the running one's state.
        again = httpx.post(
            lab.balancer_url + "/control/rollout",
            json={"strategy": "restart"},
            headers={"Authorization": f"Bearer {lab.token}"},
            timeout=5,
        )
        assert again.status_code == 409 and again.json()["code"] == "rollout_running"
        assert again.json()["rollout"]["strategy"] == "rolling"

        def ended() -> dict[str, Any] | None:
            rollout = lab.control("GET", "/control/rollout")["rollout"]
            return rollout if rollout["state"] != "running" else None

        rollout = wait_until(ended, timeout=30)
        assert rollout["state"] == "failed" and rollout["why"] == "unhealthy"
        assert rollout["current"] == "server1" and rollout["step"] == "health"
        assert "server1 was not healthy within 2 s: 503 Service Unavailable" in rollout["reason"]
        assert rollout["servers"]["server1"]["returned"] is False
        assert rollout["servers"]["server2"] == {"result": "untouched"}
        # The broken server1 stays out of rotation; server2 keeps its process and its traffic.
        states = {s["name"]: s["state"] for s in lab.status()["servers"]}
        assert states == {"server1": "DRAIN", "server2": "UP"}
        after = pids(lab)
        assert after["server2"] == before["server2"] and after["server1"] != before["server1"]
        events = httpx.get(lab.balancer_url + "/events", timeout=5).json()["events"]
        failed = [e for e in events if e["kind"] == "rollout" and e["phase"] == "failed"][-1]
        assert EventText("es").sentence(failed) == (
            "reinicio gradual FALLÓ en server1 (esperando su chequeo de salud): server1 no "
            "quedó sano en 2 s: respondió 503"
        )


@pytest.mark.slow
def test_the_rollout_experiment_shows_rolling_fails_nothing_and_restart_fails(
    tmp_path: Path,
) -> None:
    result = run(RolloutSettings(repeat=1))
    rows = {row["strategy"]: row for row in result.results}
    assert set(rows) == {"rolling", "restart"}
    assert rows["rolling"]["failed"] == 0 and rows["rolling"]["lost"] == 0, rows
    assert rows["restart"]["failed"] > 0 and rows["restart"]["lost"] == 0, rows
    assert all(row["requests"] > 0 and row["seconds"] > 0 for row in rows.values())
    assert result.held, [(c.key, c.per_run) for c in result.claims]


def test_bad_rollout_experiment_flags_are_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["experiment", "rollout", "--concurrency", "0"]) == 2
    assert "--concurrency is 1 to 64" in capsys.readouterr().err


def test_a_recreated_container_keeps_its_configuration_and_networks_but_not_its_old_id() -> None:
    """What the Docker driver sends to create the new container (tests/test_docker_driver.py
    runs it on a real engine where one answers)."""
    old_id = "0123456789ab" + "c" * 52
    details = {
        "Id": old_id,
        "Config": {"Hostname": "0123456789ab", "Image": "ticslab-server1", "Labels": {"a": "b"}},
        "HostConfig": {"Binds": ["data:/app/data"]},
        "NetworkSettings": {
            "Networks": {
                "ticslab_default": {"Aliases": ["server1", "0123456789ab"], "IPAMConfig": None},
                "ticslab_other": {"Aliases": None},
            }
        },
    }
    body, more = recreation(details)
    assert "Hostname" not in body and body["Image"] == "ticslab-server1"
    assert body["Labels"] == {"a": "b"} and body["HostConfig"] == {"Binds": ["data:/app/data"]}
    first = body["NetworkingConfig"]["EndpointsConfig"]
    assert list(first) == ["ticslab_default"] and first["ticslab_default"]["Aliases"] == ["server1"]
    assert list(more) == ["ticslab_other"] and more["ticslab_other"]["Aliases"] == []


@pytest.mark.slow
def test_the_supervisor_gives_a_new_process_only_allowed_options(tmp_path: Path) -> None:
    """The supervisor checks a restart's options again (the balancer is not its only caller):
    a flag off the allow-list or a malformed body is refused and nothing restarts; an allowed
    one is the new process's, shown in /processes and kept."""
    options = StackOptions(
        servers=1, clients=0, balancer_port=free_port(), first_server_port=free_run(1),
        data_dir=tmp_path, lang="en",
    )  # fmt: skip
    logs = FileLogs(tmp_path / "logs")
    stack = Stack(options, "supervisor-token", logs)
    stack.start()
    try:
        url = f"{stack.supervisor_url}/processes"
        auth = {"Authorization": "Bearer supervisor-token"}
        before = httpx.get(url, headers=auth, timeout=5).json()["processes"]["server1"]["pid"]
        restart = f"{url}/server1/restart"
        for body, status in (
            ({"options": ["--tasks-file=/etc/passwd"]}, 409),
            ({"options": ["sh", "-c", "id"]}, 409),
            ({"options": "--lang=es"}, 400),
            ({"command": ["sh"]}, 400),
        ):
            answer = httpx.post(restart, json=body, headers=auth, timeout=30)
            assert answer.status_code == status, (body, answer.text)
        assert httpx.post(restart, json={"options": ["--lang=es"]}, timeout=5).status_code == 401
        listed = httpx.get(url, headers=auth, timeout=5).json()["processes"]["server1"]
        assert listed["pid"] == before and listed["options"] == []
        answer = httpx.post(restart, json={"options": ["--lang=es"]}, headers=auth, timeout=30)
        assert answer.status_code == 200 and answer.json()["pid"] != before
        listed = httpx.get(url, headers=auth, timeout=5).json()["processes"]["server1"]
        assert listed["options"] == ["--lang=es"]
        server = f"http://127.0.0.1:{options.first_server_port}"
        missing = httpx.get(server + "/tareas/999999", timeout=5).json()["error"]
        assert missing.startswith("no existe")  # the new version speaks Spanish
    finally:
        stack.stop()
        logs.close()


def test_a_failed_rollout_is_a_warning_in_the_log_and_its_steps_are_info() -> None:
    failed = {"kind": "rollout", "phase": "failed", "strategy": "rolling", "why": "stopped"}
    assert level(failed) == logging.WARNING
    assert level({**failed, "phase": "step", "step": "drain"}) == logging.INFO
