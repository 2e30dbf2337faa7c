"""Bad input always gets a clear JSON 4xx, is counted, and never becomes a 5xx."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from storage_backends import BACKENDS, storage_for, taskserver_on
from support import ServiceProcess

from services.taskserver.app import TaskServerSettings, create_app
from services.taskserver.storage import TaskStore


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """A server on each backend: bad input is refused before the storage, whichever it is."""
    process = taskserver_on("server1", storage_for(request, tmp_path_factory.mktemp("input")))
    process.start()
    yield process
    process.close()


def body(value: object) -> bytes:
    return orjson.dumps(value)


TEXT = {"Content-Type": "text/plain"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}

BAD_INPUT = [
    ("POST", "/tareas", b"not json", {}, 400, "not valid JSON"),
    ("POST", "/tareas", b"", {}, 400, "empty"),
    ("POST", "/tareas", b"[1, 2]", {}, 400, "must be a JSON object, not of type array"),
    ("POST", "/api/tasks", b'"hola"', {}, 400, "must be a JSON object, not of type string"),
    ("POST", "/api/tasks", b"{}", {}, 400, "'title' is missing"),
    ("POST", "/tareas", body({"title": ""}), {}, 400, "must not be empty"),
    ("POST", "/tareas", body({"title": "   "}), {}, 400, "must not be empty"),
    ("POST", "/tareas", body({"title": 5}), {}, 400, "must be text, not of type number"),
    ("POST", "/tareas", body({"title": None}), {}, 400, "must be text, not of type null"),
    ("POST", "/tareas", body({"title": "x" * 201}), {}, 400, "the maximum is 200"),
    ("POST", "/tareas", body({"title": "a", "completed": "yes"}), {}, 400, "'completed'"),
    ("POST", "/tareas", b'\xff\xfe{"title": "a"}', {}, 400, "not valid UTF-8 text"),
    ("POST", "/tareas", b'{"title": "caf\xe9"}', {}, 400, "not valid UTF-8 text"),
    ("POST", "/tareas", body({"title": "a", "complete": True}), {}, 400, "fields ['complete']"),
    ("POST", "/api/tasks", body({"title": "a", "tags": [1, {}]}), {}, 400, "fields ['tags']"),
    ("PUT", "/tareas/1", body({"completado": True}), {}, 400, "unknown fields ['completado']"),
    ("POST", "/tareas", b"{" * 100_000, {}, 413, "65536 bytes"),
    ("POST", "/tareas", body({"title": "a"}), {"Idempotency-Key": "k" * 201}, 400, "Idempotency"),
    ("PUT", "/tareas/1", b"{}", {}, 400, "nothing to change"),
    ("PUT", "/tareas/1", body({"completed": 1}), {}, 400, "true or false"),
    ("GET", "/tareas/999999", b"", {}, 404, "no task with id 999999"),
    ("GET", "/tareas/abc", b"", {}, 404, "no task with id 'abc'"),
    ("PUT", "/tareas/999999", body({"title": "b"}), {}, 404, "no task"),
    ("DELETE", "/api/tasks/999999", b"", {}, 404, "no task"),
    ("PUT", "/api/tasks/999999/complete", b"", {}, 404, "no task"),
    ("GET", "/nada", b"", {}, 404, "no route"),
    ("DELETE", "/tareas", b"", {}, 405, "not allowed"),
    ("GET", "/tareas/" + "9" * 30, b"", {}, 404, "no task with id"),  # past any id: not found
    # A web page can post these to any address without asking: never a task.
    ("POST", "/tareas", body({"title": "a"}), TEXT, 415, "Content-Type is 'text/plain'"),
    ("POST", "/api/tasks", b"title=a", FORM, 415, "'Content-Type: application/json'"),
    ("PUT", "/tareas/1", body({"completed": True}), TEXT, 415, "not application/json"),
    ("POST", "/tareas", body({"title": "a"}), {"Content-Type": ""}, 415, "is '', not"),
]


@pytest.mark.parametrize(
    ("method", "path", "content", "headers", "status", "fragment"),
    BAD_INPUT,
    ids=[f"{row[0]} {row[1]} {row[4]} {row[5]}" for row in BAD_INPUT],
)
def test_bad_input_gets_a_clear_json_error_and_is_counted(
    server: ServiceProcess,
    method: str,
    path: str,
    content: bytes,
    headers: dict[str, str],
    status: int,
    fragment: str,
) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        before = http.get("/errors/stats").json()
        response = http.request(method, path, content=content, headers={**JSON, **headers})
        after = http.get("/errors/stats").json()
    assert response.status_code == status
    assert fragment in response.json()["error"]
    assert after["total_errors"] == before["total_errors"] + 1
    assert after["by_status"][str(status)] == before["by_status"].get(str(status), 0) + 1
    assert after["recent_errors"][0]["message"] == response.json()["error"]


def test_an_unexpected_failure_answers_json_500_and_is_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: TaskStore, *args: object) -> list:
        raise RuntimeError("a bug")

    monkeypatch.setattr(TaskStore, "page", broken)
    app = create_app(TaskServerSettings(name="server1", tasks_file=tmp_path / "tasks.json"))

    async def ask() -> tuple[httpx.Response, dict]:
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            answer = await client.get("/tareas")
            return answer, (await client.get("/errors/stats")).json()

    answer, stats = asyncio.run(ask())
    assert answer.status_code == 500
    assert answer.json() == {
        "error": "unexpected server error: RuntimeError",
        "code": "unexpected_error",
        "type": "RuntimeError",
    }
    assert stats["by_status"] == {"500": 1}
    assert stats["recent_errors"][0]["endpoint"] == "GET /tareas"
    assert stats["recent_errors"][0]["message"] == answer.json()["error"]


@pytest.fixture(scope="module")
def in_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcess]:
    path: Path = tmp_path_factory.mktemp("hypothesis") / "tasks.json"
    app = create_app(TaskServerSettings(name="server1", tasks_file=path))
    with asyncio.Runner() as runner:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test")
        send = InProcess(runner, client)
        send("POST", "/tareas", orjson.dumps({"title": "existing"}))
        yield send
        runner.run(client.aclose())


class InProcess:
    """Requests to an app in this process (fast enough for a property test)."""

    def __init__(self, runner: asyncio.Runner, client: httpx.AsyncClient) -> None:
        self.runner = runner
        self.client = client

    def __call__(self, method: str, path: str, content: bytes) -> httpx.Response:
        request = self.client.request(method, path, content=content, headers=JSON)
        return self.runner.run(request)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.text(max_size=300),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
task_like = st.fixed_dictionaries(
    {}, optional={"title": json_values, "completed": json_values, "extra": json_values}
)
bodies = (
    st.binary(max_size=300)
    | json_values.map(orjson.dumps)
    | task_like.map(orjson.dumps)
    | st.text(max_size=300).map(str.encode)
)
targets = st.sampled_from(
    [("POST", "/tareas"), ("POST", "/api/tasks"), ("PUT", "/tareas/1"), ("PUT", "/tareas/x")]
)


@settings(max_examples=150, deadline=None)
@given(target=targets, content=bodies)
def test_arbitrary_bodies_never_get_a_5xx(
    in_process: InProcess, target: tuple[str, str], content: bytes
) -> None:
    method, path = target
    response = in_process(method, path, content)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert isinstance(response.json()["error"], str)


@pytest.mark.parametrize(
    "media", ["application/json", "application/json; charset=utf-8", "application/merge+json"]
)
def test_json_media_types_are_accepted(server: ServiceProcess, media: str) -> None:
    content = body({"title": "con tipo"})
    answer = httpx.post(server.url + "/tareas", content=content, headers={"Content-Type": media})
    assert answer.status_code == 201
