"""What a hostile control request leaves behind in the balancer is bounded: a fault body's
unknown fields are never kept, and a control body past 64 KiB is refused unread (issue 23,
item 17); two Idempotency-Key headers are refused, not one of them taken (item 21)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import ServiceProcess, taskserver
from test_balancer_helpers import TOKEN, balancer_process, status_of

from services.balancer.control import fault_fields
from services.balancer.events import EVENT_TEXT, EventLog

PAD = "x" * 60_000  # within the task server's 64 KiB, so it reads the body and refuses it
HUGE = "x" * 2_000_000  # past the balancer's 64 KiB for a control body: its own 413
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def one_server(tmp_path: Path) -> Iterator[ServiceProcess]:
    server = taskserver("server1", tmp_path / "tasks.json", env={"TICSLAB_TOKEN": TOKEN}).start()
    slow_checks = ["--check-interval", "60", "--fast-check-interval", "60"]
    balancer = balancer_process([("server1", server.url)], "round_robin", *slow_checks).start()
    yield balancer
    balancer.close()
    server.close()


def last_fault_event(balancer: ServiceProcess) -> dict:
    events = httpx.get(balancer.url + "/events", timeout=10).json()
    return [e for e in events["events"] if e.get("action") == "fault"][-1]


def test_a_fault_bodys_pad_is_never_kept_taken_or_refused(one_server: ServiceProcess) -> None:
    balancer = one_server
    url = balancer.url + "/control/servers/server1/fault"
    refused = httpx.put(url, json={"mode": "error", "rate": 5, "pad": PAD}, headers=AUTH)
    assert refused.status_code == 400  # the task server's own refusal, passed on
    assert last_fault_event(balancer)["fault"] == {"mode": "error", "rate": 5}
    too_big = httpx.put(url, json={"mode": "none", "pad": HUGE}, headers=AUTH)
    assert too_big.status_code == 413 and "65536" in too_big.json()["error"]
    chunked = (b"x" * 16384 for _ in range(200))  # 3 MB without a Content-Length
    assert httpx.put(url, content=chunked, headers=AUTH).status_code == 413
    assert last_fault_event(balancer)["fault"] == {"mode": "error", "rate": 5}  # none since
    taken = httpx.put(url, json={"mode": "latency", "ms": 1, "pad": HUGE[:30_000]}, headers=AUTH)
    assert taken.status_code == 200
    event = last_fault_event(balancer)
    assert (event["ok"], event["fault"]) == (True, {"mode": "latency", "ms": 1})
    assert status_of(balancer)["servers"][0]["fault"] == {"mode": "latency", "ms": 1}
    assert len(httpx.get(balancer.url + "/events", timeout=10).content) < 20_000


def test_fault_fields_keeps_known_numbers_and_short_text_only() -> None:
    hostile = {"mode": "x" * 10_000, "rate": True, "ms": [1], "max_seconds": 2.5, "pad": 1}
    kept = fault_fields(hostile)
    assert kept.keys() == {"mode", "max_seconds"}
    assert len(kept["mode"]) == EVENT_TEXT and kept["mode"].endswith("…")
    assert fault_fields("not a fault") == {}


def test_every_text_field_of_an_event_is_bounded() -> None:
    log = EventLog()
    event = log.add("failure", None, reason="y" * 1_000_000)
    assert len(event["reason"]) == EVENT_TEXT


def test_two_idempotency_keys_through_the_balancer_are_a_400(one_server: ServiceProcess) -> None:
    """The balancer passes both on (it never picks one), so the task server refuses."""
    headers = [("Idempotency-Key", "k-1"), ("Idempotency-Key", "k-2"), ("Accept-Language", "es")]
    answer = httpx.post(one_server.url + "/tareas", json={"title": "x"}, headers=headers)
    assert answer.status_code == 400
    assert answer.json()["code"] == "two_idempotency_keys"
    assert answer.json()["error"].startswith("envía un solo encabezado Idempotency-Key")
