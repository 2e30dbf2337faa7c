"""Spanish to the last word: every string table has both languages with the same keys and the
same fields, and the documented CLI errors of up, demo, dashboard and client come out in
Spanish when the class runs in Spanish (``TICSLAB_LANG=es`` or ``--lang es``)."""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import socket
import string
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from support import TICSLAB, free_port, wait_until
from test_launcher import UpStack, listening

import dashboard
import services
from services.lang import LANGUAGES, missing_keys
from services.launcher.stack import StackOptions, plan

# Words the course's Spanish does not use: "solicitudes", not "peticiones"; "tú", not "usted".
NOT_OUR_SPANISH = re.compile(
    r"petici[oó]n|usted|\b(ingrese|presione|seleccione|elija|inicie|pulse|escriba)\b", re.I
)


def modules() -> Iterator[ModuleType]:
    """Every module of the lab (``__main__`` modules would start the app, so not those)."""
    for package in (services, dashboard):
        yield package
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not info.name.endswith("__main__"):
                yield importlib.import_module(info.name)


def catalogues() -> dict[str, Mapping[str, Mapping[str, str]]]:
    """Each string table found in the code, by where it is defined: a module-level mapping
    whose keys are languages and whose values are mappings of texts (found, not listed, so a
    new one is walked too)."""
    found = {}
    for module in modules():
        source = Path(module.__file__ or "").read_text(encoding="utf-8")
        for name, value in vars(module).items():
            if (
                isinstance(value, Mapping)
                and value
                and set(value) <= set(LANGUAGES)
                and "en" in value
                and all(isinstance(texts, Mapping) for texts in value.values())
                and re.search(rf"^{name}\b[^=\n]*=", source, re.M)  # defined here
            ):
                found[f"{module.__name__}.{name}"] = value
    return found


CATALOGUES = catalogues()


def test_the_known_string_tables_are_found() -> None:
    for expected in (
        "services.errors.ERRORS",
        "services.launcher.i18n.TEXT",
        "services.client.i18n.TEXT",
        "dashboard.cli_i18n.TEXT",
        "dashboard.i18n.CATALOGS",
    ):
        assert expected in CATALOGUES, sorted(CATALOGUES)


def fields(text: str) -> set[str]:
    """The ``{name}`` fields a sentence fills in."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


# Tables whose Spanish may fill a sentence from other fields than the English: an event's
# English reason is the balancer's own sentence, said as it is; the Spanish is rebuilt from
# the event's fields.
REBUILT = {"services.balancer.messages.CATALOGUE"}


@pytest.mark.parametrize("name", sorted(CATALOGUES))
def test_every_table_speaks_both_languages_alike(name: str) -> None:
    catalogue = CATALOGUES[name]
    assert set(catalogue) == set(LANGUAGES), name
    assert missing_keys(catalogue) == {}, name
    english, spanish = catalogue["en"], catalogue["es"]
    if name not in REBUILT:
        different = {key for key in english if fields(english[key]) != fields(spanish[key])}
        assert not different, f"{name}: fields differ in {sorted(different)}"
    wrong = {key: text for key, text in spanish.items() if NOT_OUR_SPANISH.search(text)}
    assert not wrong, f"{name}: {wrong}"


def test_every_error_code_is_in_the_api_docs() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "api.md").read_text()
    errors = CATALOGUES["services.errors.ERRORS"]
    assert [code for code in errors["en"] if f"| `{code}` |" not in docs] == []


def test_the_stack_gives_every_process_its_language() -> None:
    specs = plan(StackOptions(servers=2, clients=1, lang="es"), "t0ken", "http://127.0.0.1:1")
    assert {spec.role for spec in specs} == {"taskserver", "balancer", "client"}
    assert all(spec.env["TICSLAB_LANG"] == "es" for spec in specs)


def ticslab(*args: str, lang: str = "es", timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """A real ``ticslab`` command run with ``TICSLAB_LANG``; its output and exit code."""
    env = {**os.environ, "TICSLAB_LANG": lang}
    return subprocess.run(
        [*TICSLAB, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something (this test) listens on."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        yield blocker.getsockname()[1]


def stack_args(tmp_path: Path, balancer_port: int | None = None) -> list[str]:
    """``up``/``demo`` options for a stack on free ports, one server, no client."""
    return [
        "--servers", "1", "--clients", "0", "--data-dir", str(tmp_path / "data"),
        "--balancer-port", str(balancer_port or free_port()),
        "--first-server-port", str(free_port()),
    ]  # fmt: skip


def test_up_names_a_port_in_use_in_spanish(tmp_path: Path, taken_port: int) -> None:
    done = ticslab("up", *stack_args(tmp_path, taken_port))
    assert done.returncode == 1
    assert "no se pudieron iniciar los servicios" in done.stdout
    assert f"el puerto {taken_port} ya está en uso en 127.0.0.1: lo ocupa el pid" in done.stdout
    assert not (tmp_path / "data").exists()


def test_up_accepts_lang_and_refuses_an_unknown_algorithm_in_spanish(tmp_path: Path) -> None:
    done = ticslab("up", "--lang", "es", "--algorithm", "magia", *stack_args(tmp_path), lang="en")
    assert done.returncode == 1
    assert "algoritmo desconocido 'magia'; elige uno de random, round_robin" in done.stdout


def test_the_same_refusal_in_english(tmp_path: Path) -> None:
    done = ticslab("up", "--servers", "0", *stack_args(tmp_path)[2:], lang="en")
    assert done.returncode == 1
    assert "could not start the stack: --servers must be at least 1" in done.stdout


def test_demo_refuses_flags_that_go_with_web_in_spanish(tmp_path: Path) -> None:
    done = ticslab("demo", "--web-port", "8001", *stack_args(tmp_path))
    assert done.returncode == 2
    assert "--web-host, --web-port y --allow-remote-control van con --web" in done.stdout


def test_demo_refuses_bad_retries_in_spanish(tmp_path: Path) -> None:
    done = ticslab("demo", "--retries", "99", *stack_args(tmp_path))
    assert done.returncode == 1
    assert "no se pudieron iniciar los servicios: --retries va de 0 a 10" in done.stdout


def test_dashboard_refuses_flags_that_go_with_web_in_spanish() -> None:
    done = ticslab("dashboard", "--port", "9000")
    assert done.returncode == 2
    assert "--host, --port y --allow-remote-control van con --web" in done.stderr


def test_dashboard_names_a_port_in_use_in_spanish(taken_port: int) -> None:
    done = ticslab("dashboard", "--web", "--port", str(taken_port))
    assert done.returncode == 1
    assert f"no se puede escuchar en 127.0.0.1:{taken_port}" in done.stderr


def test_client_without_a_balancer_says_so_in_spanish() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    done = ticslab("client", "--url", url, "--wait", "0.3s", "--tasks", "1")
    assert done.returncode == 2
    assert f"error: ningún balanceador respondió en {url}/health en 0.3s" in done.stderr


def test_client_refuses_a_bad_setting_in_spanish() -> None:
    env = {**os.environ, "TICSLAB_LANG": "es", "TICSLAB_DURATION": "pronto"}
    done = subprocess.run([*TICSLAB, "client"], env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert "error: ajuste inválido del cliente: no es una duración: 'pronto'" in done.stderr


BAD_VALUES = [
    # command and a bad flag value, and the Spanish reason argparse shows (exit code 2)
    (["up", "--weight", "server2"], "un peso es NOMBRE=N con N de 0 a 256"),
    (["demo", "--refresh", "0"], "refresh debe estar entre 0.25 y 30.0 segundos, no 0.0"),
    (["dashboard", "--web", "--port", "99999"], "un puerto va de 1 a 65535, no '99999'"),
    (["client", "--rate", "-1"], "debe ser 0 (sin límite) o más, no -1.0"),
    (["client", "--concurrency", "muchos"], "'muchos' no es un número"),
    (["client", "--then", "luego"], "'luego': usa exit o steady"),
]


@pytest.mark.parametrize(("args", "reason"), BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_a_bad_flag_value_is_refused_in_spanish(args: list[str], reason: str) -> None:
    done = ticslab(*args)
    assert done.returncode == 2
    assert reason in done.stderr


@pytest.mark.slow
def test_a_stack_run_in_spanish_speaks_spanish_everywhere(tmp_path: Path) -> None:
    """``ticslab up --lang es``: its banner and stop lines, and the API errors of its task
    server and balancer without any Accept-Language (TICSLAB_LANG reached every process)."""
    stack = UpStack(tmp_path, servers=1)
    stack.args += ["--lang", "es"]
    with stack.log.open("wb") as out:
        stack.proc = subprocess.Popen(
            stack.command("up"), env=stack.env(), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_until(lambda: "Ctrl+C detiene todo." in stack.output(), 30, what="the banner")
        assert "ticslab up: balanceador + 1 servidor de tareas + 0 clientes" in stack.output()
        missing = httpx.post(stack.url + "/tareas", json={})  # through the balancer
        assert missing.status_code == 400
        assert missing.json()["error"].startswith("falta el campo 'title'")
        direct = httpx.delete(f"http://127.0.0.1:{stack.server_ports[0]}/api/tasks/999999")
        assert direct.json()["error"] == "no existe una tarea con id 999999"
        own = httpx.post(stack.url + "/control/servers/server1/stop")
        assert own.status_code == 401 and own.json()["error"].startswith("falta el token")
        assert stack.interrupt() == 0
        assert "detenido: no queda ningún proceso en marcha" in stack.output()
        assert not listening(stack.balancer_port)
    finally:
        stack.close()
