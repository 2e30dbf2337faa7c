"""API errors speak the class's language: Spanish with ``Accept-Language: es``, English
without, Spanish without the header when the process runs with ``TICSLAB_LANG=es``; and each
carries the same machine-readable ``code`` (and fields) in both languages."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from support import ServiceProcess, free_port, taskserver
from test_balancer_helpers import TOKEN, balancer_process

from services.errors import ERRORS

ES = {"Accept-Language": "es-CL,es;q=0.9"}
EN = {"Accept-Language": "en"}
JSON = {"Content-Type": "application/json"}
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    process = taskserver("server1", tmp_path_factory.mktemp("es") / "tasks.json").start()
    yield process
    process.close()


@pytest.fixture(scope="module")
def spanish_balancer() -> Iterator[ServiceProcess]:
    """A balancer run with TICSLAB_LANG=es in front of a port where nothing listens."""
    process = balancer_process([("server1", f"http://127.0.0.1:{free_port()}")])
    process.env["TICSLAB_LANG"] = "es"
    process.start()
    yield process
    process.close()


def both(url: str, method: str, path: str, **kwargs: object) -> tuple[dict, dict, int]:
    """The same request asked in Spanish and without Accept-Language: both bodies, and the
    status (checked to be the same)."""
    headers = kwargs.pop("headers", {})
    with httpx.Client(base_url=url, timeout=10) as http:
        spanish = http.request(method, path, headers={**headers, **ES}, **kwargs)  # type: ignore[arg-type]
        plain = http.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]
    assert spanish.status_code == plain.status_code
    return spanish.json(), plain.json(), spanish.status_code


def same_but_the_sentence(spanish: dict, other: dict) -> None:
    """``code`` and every field but ``error`` are the same; the sentences differ."""
    assert spanish["code"] in ERRORS["en"]
    assert {k: v for k, v in spanish.items() if k != "error"} == {
        k: v for k, v in other.items() if k != "error"
    }
    assert spanish["error"] != other["error"]


TASK_SERVER_CASES = [
    # method, path, request options, status, code, Spanish, English
    ("POST", "/tareas", {"content": b"{}", "headers": JSON}, 400, "field_missing",
     "falta el campo 'title'", "the field 'title' is missing"),
    ("DELETE", "/api/tasks/999999", {}, 404, "task_not_found",
     "no existe una tarea con id 999999", "there is no task with id 999999"),
    ("POST", "/tareas", {"content": b'{"title": "a"}', "headers": {"Content-Type": "text/plain"}},
     415, "not_json", "no application/json; envíalo con", "not application/json; send it"),
    ("GET", "/nada", {}, 404, "route_not_found", "no existe la ruta GET /nada",
     "there is no route GET /nada"),
    ("PATCH", "/tareas", {}, 405, "method_not_allowed", "el método PATCH no está permitido",
     "method PATCH is not allowed"),
    ("POST", "/tareas", {"content": b"x" * 70_000, "headers": JSON}, 413, "body_too_large",
     "el cuerpo pesa más de 65536 bytes", "the body is larger than 65536 bytes"),
    ("PUT", "/admin/fault", {"json": {"mode": "none"}}, 403, "admin_off",
     "están desactivadas", "are off"),
    ("POST", "/api/tasks", {"content": b'{"title": 5}', "headers": JSON}, 400, "title_not_text",
     "'title' debe ser texto", "'title' must be text"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "options", "status", "code", "spanish", "english"),
    TASK_SERVER_CASES,
    ids=[case[4] for case in TASK_SERVER_CASES],
)
def test_task_server_errors_follow_accept_language(
    server: ServiceProcess,
    method: str,
    path: str,
    options: dict,
    status: int,
    code: str,
    spanish: str,
    english: str,
) -> None:
    asked, plain, answered = both(server.url, method, path, **options)
    assert answered == status
    assert asked["code"] == code
    assert spanish in asked["error"]
    assert english in plain["error"]
    same_but_the_sentence(asked, plain)


def test_field_missing_names_the_field_for_scripts(server: ServiceProcess) -> None:
    answer = httpx.post(server.url + "/tareas", content=b"{}", headers={**JSON, **ES})
    assert answer.json() == {
        "error": 'falta el campo \'title\'; envía JSON como {"title": "comprar pan"}',
        "code": "field_missing",
        "field": "title",
    }


def test_a_task_server_run_in_spanish_answers_spanish_without_the_header(
    tmp_path: Path,
) -> None:
    process = taskserver("server1", tmp_path / "tasks.json", env={"TICSLAB_LANG": "es"})
    process.start()
    try:
        spanish = httpx.delete(process.url + "/api/tasks/999999")
        english = httpx.delete(process.url + "/api/tasks/999999", headers=EN)
    finally:
        process.close()
    assert spanish.json()["error"] == "no existe una tarea con id 999999"
    assert english.json()["error"] == "there is no task with id 999999"
    assert spanish.json()["code"] == english.json()["code"] == "task_not_found"


BALANCER_CASES = [
    # method, path, request options, status, code, Spanish (no header: TICSLAB_LANG=es)
    ("GET", "/tareas", {}, 503, "no_server", "no hay ningún servidor de tareas disponible"),
    ("GET", "/health", {}, 503, "no_server_up", "ningún servidor de tareas está UP"),
    ("POST", "/control/stats/reset", {}, 401, "bad_token", "falta el token"),
    ("POST", "/control/servers/nadie/stop", {"headers": AUTH}, 404, "unknown_server",
     "no hay un servidor llamado 'nadie'"),
    ("POST", "/control/servers/server1/bailar", {"headers": AUTH}, 400, "unknown_action",
     "acción desconocida 'bailar'"),
    ("PUT", "/control/algorithm", {"headers": AUTH, "json": {"algorithm": "magia"}}, 400,
     "bad_algorithm", 'envía {"algorithm": NOMBRE}'),
    ("PUT", "/control/servers/server1/weight", {"headers": AUTH, "json": {"weight": 999}}, 400,
     "bad_weight", "un peso es un número entero de 0 a 256"),
    ("GET", "/control", {"headers": {"Host": "evil.example.com"}}, 403, "foreign_host",
     "no es un nombre permitido"),
    ("GET", "/control/nada", {}, 404, "control_not_found", "no existe la ruta GET /control/nada"),
    ("POST", "/status", {}, 405, "method_not_allowed", "el método POST no está permitido"),
    ("GET", "/events?since=ayer", {}, 400, "bad_event_since", "since debe ser un id de evento"),
    ("GET", "/admin/fault", {}, 404, "admin_via_control", "usa /control"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "options", "status", "code", "spanish"),
    BALANCER_CASES,
    ids=[case[4] for case in BALANCER_CASES],
)
def test_balancer_errors_are_spanish_when_it_runs_in_spanish(
    spanish_balancer: ServiceProcess,
    method: str,
    path: str,
    options: dict,
    status: int,
    code: str,
    spanish: str,
) -> None:
    options = dict(options)
    headers = options.pop("headers", {})
    with httpx.Client(base_url=spanish_balancer.url, timeout=10) as http:
        default = http.request(method, path, headers=headers, **options)
        english = http.request(method, path, headers={**headers, **EN}, **options)
    assert default.status_code == english.status_code == status
    assert default.json()["code"] == code
    assert spanish in default.json()["error"]
    same_but_the_sentence(default.json(), english.json())


def test_a_request_the_balancer_cannot_parse_is_refused_in_its_language(
    spanish_balancer: ServiceProcess,
) -> None:
    with socket.create_connection(("127.0.0.1", spanish_balancer.port), timeout=10) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert orjson.loads(body) == {
        "error": "solicitud HTTP inválida: no se pudo interpretar",
        "code": "unparsable",
    }
