"""Authentication at the edge (``--auth-users``), on real processes: a users file made by
``ticslab passwd`` (and a line of Apache's own ``htpasswd -B``), a real balancer in front of
echo backends that tell back the headers they received, real bcrypt.

Every balancer here sees every test from 127.0.0.1, and failures are limited per address: each
test that fails logins speaks from an address of its own (127.0.0.2, .3, ...), as many clients
of a class would.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import TICSLAB, ServiceProcess, free_port, free_run, wait_until
from test_balancer_helpers import EchoBackend, balancer_process

from dashboard.api import BalancerClient
from dashboard.i18n import Translator as DashboardTranslator
from dashboard.poll import TASKS_EVERY, Poller
from dashboard.widgets.panels import ErrorsPanel
from services.balancer.auth import (
    MAX_FAILURES,
    Checker,
    FailureLimiter,
    VerifiedCache,
    basic_credentials,
)
from services.balancer.htpasswd import UsersFileError, load_users, parse_users
from services.balancer.passwd_i18n import TEXT
from services.errors import ERRORS
from services.lang import missing_keys
from services.launcher import cli as up
from services.launcher.stack import StackOptions

# A line `htpasswd -nbB -C 5 alumno secreto` printed (Apache's $2y$), for machines without it.
FIXED_APACHE_LINE = "alumno:$2y$05$DixDH3IusjlVbMT6StotIO50eNGqFyGHOkELGqqxGsOyc.G5p0Lny"
MONITORING = ("/health", "/status", "/errors/stats", "/events", "/history", "/metrics", "/control")


def passwd(path: Path, user: str, password: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """``ticslab passwd`` with the password on stdin (not a terminal), cost 4: quick tests."""
    command = [*TICSLAB, "passwd", str(path), user, "--cost", "4", "--lang", "en", *extra]
    return subprocess.run(command, input=password + "\n", capture_output=True, text=True)


def apache_line() -> str:
    """A line of the real ``htpasswd -B`` when apache2-utils is installed, else a fixed one."""
    if shutil.which("htpasswd") is None:
        return FIXED_APACHE_LINE
    done = subprocess.run(
        ["htpasswd", "-nbB", "-C", "5", "alumno", "secreto"], capture_output=True, text=True
    )
    return done.stdout.strip()


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def client_from(address: str) -> httpx.Client:
    """A client whose connections come from ``address`` (any 127.x.y.z is this machine)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10)


@pytest.fixture(scope="module")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "users.htpasswd"
    assert passwd(path, "ana", "secreto-ana").returncode == 0
    with path.open("a") as file:
        file.write(apache_line() + "\n")
    return path


@pytest.fixture(scope="module")
def guarded(echoes: list[EchoBackend], users_file: Path) -> Iterator[ServiceProcess]:
    backends = [(e.name, e.url) for e in echoes]
    balancer = balancer_process(backends, "round_robin", "--auth-users", str(users_file))
    yield balancer.start()
    balancer.close()


@pytest.mark.smoke
def test_passwd_writes_a_bcrypt_file_0600_from_stdin_and_changes_a_user(tmp_path: Path) -> None:
    path = tmp_path / "users"
    done = passwd(path, "ana", "uno")
    assert done.returncode == 0 and "ana added" in done.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert passwd(path, "beto", "dos").returncode == 0
    first = path.read_text()
    done = passwd(path, "ana", "tres")
    assert done.returncode == 0 and "ana's password changed" in done.stdout
    lines = path.read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["ana", "beto"]
    assert lines[0].startswith("$2b$04$", 4) and lines[0] not in first  # a new hash
    assert lines[1] in first  # beto untouched
    assert set(load_users(path)) == {"ana", "beto"}
    assert [p.name for p in tmp_path.iterdir()] == ["users"]  # no temporary file left


@pytest.mark.parametrize(
    ("user", "password", "says"),
    [
        ("bad user", "x", "cannot be a user"),
        ("ana:x", "x", "cannot be a user"),
        ("ana", "", "no password given"),
        ("ana", "ñ" * 37, "74 bytes"),
    ],
)
def test_passwd_refuses_bad_names_and_passwords(
    tmp_path: Path, user: str, password: str, says: str
) -> None:
    done = passwd(tmp_path / "users", user, password)
    assert done.returncode == 2 and says in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "users").exists()


def test_passwd_will_not_rewrite_a_file_with_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text("carl:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n")
    done = passwd(path, "ana", "uno")
    assert done.returncode == 2 and "line 1" in done.stderr and "SHA-1" in done.stderr
    assert "W6ph5" not in done.stderr
    assert path.read_text() == "carl:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n"


def test_without_credentials_a_proxied_request_gets_401_and_the_realm(
    guarded: ServiceProcess, echoes: list[EchoBackend]
) -> None:
    hits = sum(e.hits for e in echoes)
    answer = httpx.post(guarded.url + "/tareas", json={"title": "x"}, timeout=5)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == 'Basic realm="ticslab"'
    assert answer.json()["code"] == "auth_required"
    spanish = httpx.get(guarded.url + "/tareas", headers={"Accept-Language": "es"}, timeout=5)
    assert spanish.json()["error"].startswith("se necesita usuario y contraseña")
    assert sum(e.hits for e in echoes) == hits  # never reached a server


@pytest.mark.parametrize(
    ("address", "headers"),
    [
        ("127.0.0.2", basic("ana", "wrong")),
        ("127.0.0.3", basic("nobody", "secreto-ana")),
        ("127.0.0.4", {"Authorization": "Basic not-base64!"}),
        ("127.0.0.4", {"Authorization": "Bearer balancer-test-token"}),
    ],
)
def test_bad_credentials_get_401(
    guarded: ServiceProcess, address: str, headers: dict[str, str]
) -> None:
    with client_from(address) as client:
        answer = client.get(guarded.url + "/tareas", headers=headers)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == 'Basic realm="ticslab"'
    assert answer.json()["code"] in ("auth_failed", "auth_required")


@pytest.mark.smoke
def test_good_credentials_reach_the_server_as_a_user_and_never_the_password(
    guarded: ServiceProcess,
) -> None:
    forged = {**basic("ana", "secreto-ana"), "X-Authenticated-User": "admin"}
    answer = httpx.get(guarded.url + "/anything", headers=forged, timeout=5)
    assert answer.status_code == 200
    seen = [(name.lower(), value) for name, value in answer.json()["headers"]]
    assert ("x-authenticated-user", "ana") in seen
    assert [name for name, _ in seen].count("x-authenticated-user") == 1
    assert "authorization" not in [name for name, _ in seen]


@pytest.mark.smoke
def test_a_line_of_apaches_htpasswd_is_read(guarded: ServiceProcess) -> None:
    answer = httpx.get(guarded.url + "/tareas", headers=basic("alumno", "secreto"), timeout=5)
    assert answer.status_code == 200


def test_monitoring_routes_stay_open(guarded: ServiceProcess) -> None:
    for path in MONITORING:
        answer = httpx.get(guarded.url + path, timeout=5)
        assert answer.status_code == 200, path
        assert "www-authenticate" not in answer.headers, path


def test_errors_stats_counts_401s_as_a_type_of_their_own(guarded: ServiceProcess) -> None:
    def unauthorized() -> int:
        stats = httpx.get(guarded.url + "/errors/stats", timeout=5).json()
        return int(stats["error_types"].get("401_UNAUTHORIZED", 0))

    before = unauthorized()
    for _ in range(3):
        httpx.get(guarded.url + "/api/tasks", timeout=5)
    assert unauthorized() == before + 3
    stats = httpx.get(guarded.url + "/errors/stats", timeout=5).json()
    newest = stats["recent_errors"][0]
    assert (newest["status"], newest["endpoint"]) == (401, "GET /api/tasks")


def test_failed_logins_are_limited_per_address_but_a_verified_header_still_passes(
    guarded: ServiceProcess,
) -> None:
    good = basic("ana", "secreto-ana")
    with client_from("127.0.0.5") as client:
        assert client.get(guarded.url + "/tareas", headers=good).status_code == 200  # cached
        for _ in range(MAX_FAILURES):
            assert client.get(guarded.url + "/tareas", headers=basic("ana", "x")).status_code == 401
        refused = client.get(guarded.url + "/tareas", headers=basic("ana", "y"))
        assert refused.status_code == 429 and refused.json()["code"] == "auth_too_many"
        assert 1 <= int(refused.headers["retry-after"]) <= 10
        assert client.get(guarded.url + "/tareas", headers=good).status_code == 200
    with client_from("127.0.0.6") as other:  # another address is not held back
        assert other.get(guarded.url + "/tareas", headers=basic("ana", "x")).status_code == 401
    stats = httpx.get(guarded.url + "/errors/stats", timeout=5).json()
    assert stats["error_types"]["429_TOO_MANY_REQUESTS"] >= 1


def test_the_dashboards_error_panel_names_401s_and_429s_in_both_languages(
    guarded: ServiceProcess,
) -> None:
    """After the test above, the balancer's real /errors/stats holds both kinds."""
    with client_from("127.0.0.8") as client:
        for _ in range(MAX_FAILURES + 1):
            client.get(guarded.url + "/tareas", headers=basic("ana", "x"))
    stats = httpx.get(guarded.url + "/errors/stats", timeout=5).json()
    spanish = ErrorsPanel(DashboardTranslator("es")).render_stats(stats).plain
    assert re.search(r"401 +\d+ sin autorización", spanish)
    assert re.search(r"429 +\d+ demasiadas solicitudes", spanish)
    assert "sin servidor GET /tareas" in spanish  # no server saw them
    english = ErrorsPanel(DashboardTranslator("en")).render_stats(stats).plain
    assert "unauthorized" in english and "too many requests" in english


async def test_the_dashboard_reads_tasks_rarely_once_refused(guarded: ServiceProcess) -> None:
    """The dashboard has no user: its /tareas reads are refused, and then slowed from every
    3 s to every 60 s, so that its own 401s do not fill the panel the class watches."""

    def unauthorized() -> int:
        stats = httpx.get(guarded.url + "/errors/stats", timeout=5).json()
        return int(stats["error_types"].get("401_UNAUTHORIZED", 0))

    client = BalancerClient(guarded.url)
    poller = Poller(client)
    try:
        before = unauthorized()
        assert (await poller.fetch()).tasks is None
        assert unauthorized() == before + 1
        poller._tasks_read_at -= TASKS_EVERY * 3  # as if 9 s had passed
        await poller.fetch()
        assert unauthorized() == before + 1
    finally:
        await client.aclose()


@pytest.mark.slow
def test_a_limited_address_may_log_in_again_after_retry_after(
    echoes: list[EchoBackend], users_file: Path
) -> None:
    balancer = balancer_process(
        [(e.name, e.url) for e in echoes], "round_robin", "--auth-users", str(users_file)
    ).start()
    try:
        with client_from("127.0.0.7") as client:
            for _ in range(MAX_FAILURES):
                client.get(balancer.url + "/tareas", headers=basic("ana", "x"))
            good = basic("ana", "secreto-ana")
            refused = client.get(balancer.url + "/tareas", headers=good)
            assert refused.status_code == 429  # not verified yet: not even the right password

            def logged_in() -> bool:
                return client.get(balancer.url + "/tareas", headers=good).status_code == 200

            wait_until(logged_in, timeout=15, interval=0.5, what="the window to pass")
    finally:
        balancer.close()


@pytest.mark.slow
async def test_a_flood_of_bad_passwords_is_bounded_and_does_not_hold_the_proxy(
    echoes: list[EchoBackend], tmp_path: Path
) -> None:
    """Cost 11 (~0.1 s a check, two threads): 48 wrong passwords at once from 12 addresses
    (each under the per-address limit) fill the queue of 32; the rest get 503 at once, and a
    verified client is answered all along."""
    users = tmp_path / "users"
    assert passwd(users, "ana", "secreto-ana", "--cost", "11").returncode == 0
    backends = [(e.name, e.url) for e in echoes]
    balancer = balancer_process(backends, "round_robin", "--auth-users", str(users)).start()
    good = basic("ana", "secreto-ana")
    clients = [
        httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(local_address=f"127.0.1.{n}"), timeout=30
        )
        for n in range(1, 13)
    ]
    try:
        async with httpx.AsyncClient(timeout=30) as verified:
            assert (await verified.get(balancer.url + "/tareas", headers=good)).status_code == 200

            async def bad(client: httpx.AsyncClient) -> httpx.Response:
                return await client.get(balancer.url + "/tareas", headers=basic("ana", "x"))

            flood = asyncio.gather(*(bad(c) for c in clients for _ in range(MAX_FAILURES - 1)))
            await asyncio.sleep(0)  # the flood's requests are on their way
            started = time.monotonic()
            during = await verified.get(balancer.url + "/tareas", headers=good)
            waited = time.monotonic() - started
            answers = await flood
        assert during.status_code == 200 and waited < 1.0, waited
        codes = sorted({a.json()["code"] for a in answers})
        assert codes == ["auth_busy", "auth_failed"], codes
        busy = [a for a in answers if a.status_code == 503]
        assert all(a.headers["retry-after"] == "1" for a in busy)
    finally:
        for client in clients:
            await client.aclose()
        balancer.close()


def test_with_auth_off_a_forged_user_is_removed_and_authorization_forwarded(
    echoes: list[EchoBackend],
) -> None:
    balancer = balancer_process([(e.name, e.url) for e in echoes]).start()
    try:
        headers = {"X-Authenticated-User": "admin", "Authorization": "Bearer theirs"}
        answer = httpx.get(balancer.url + "/anything", headers=headers, timeout=5)
        seen = {name.lower(): value for name, value in answer.json()["headers"]}
        assert "x-authenticated-user" not in seen
        assert seen["authorization"] == "Bearer theirs"
    finally:
        balancer.close()


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("ana:$apr1$xyz$0123456789abcdefghijkl\n", "line 1: user ana: the hash is not bcrypt"),
        ("# the class\n\nana\n", "line 3: expected USER:HASH"),
        ("ana:$2y$05$short\n", "line 1: user ana: the hash is malformed"),
        ("ana:$2y$03$" + "a" * 53 + "\n", "line 1: user ana: bcrypt cost out of"),
        (f"{FIXED_APACHE_LINE}\n{FIXED_APACHE_LINE}\n", "line 2: user alumno is listed twice"),
        ("# nobody yet\n", "no users"),
    ],
)
def test_a_bad_users_file_is_refused_by_line_without_the_hash(
    tmp_path: Path, content: str, says: str
) -> None:
    path = tmp_path / "users"
    path.write_text(content)
    with pytest.raises(UsersFileError) as error:
        load_users(path)
    assert says in str(error.value)
    for secret in ("$apr1$xyz", "$2y$05$short", "aaaaaaaa", "DixDH3"):
        assert secret not in str(error.value)


def test_the_balancer_and_ticslab_up_refuse_a_bad_users_file_before_starting(
    tmp_path: Path,
) -> None:
    path = tmp_path / "users"
    path.write_text("# the class\nana:$apr1$xyz$0123456789abcdefghijkl\n")
    command = [*TICSLAB, "balancer", "--port", "1", "--auth-users", str(path)]
    # No token given: a balancer that would run makes one and writes its file; this one must not.
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    env.pop("TICSLAB_TOKEN", None)
    env.pop("TICSLAB_TOKEN_FILE", None)
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 2
    assert not (tmp_path / "state").exists()
    expected = f"--auth-users {path}: line 2: user ana: the hash is not bcrypt: Apache MD5"
    assert done.stderr.strip().splitlines() == [
        f"ticslab balancer: {expected}; make it with `ticslab passwd FILE USER` or "
        "`htpasswd -B FILE USER`"
    ]
    options = StackOptions(balancer_port=free_port(), first_server_port=free_run(2))
    options.auth_users = path
    assert [problem.split(";")[0] for problem in options.problems()] == [expected]


def test_ticslab_up_passes_the_users_file_to_its_balancer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parser = argparse.ArgumentParser()
    up.add_arguments(parser)
    monkeypatch.chdir(tmp_path)
    options = up.options_from_args(parser.parse_args(["--auth-users", "users"]))
    assert f"--auth-users={tmp_path / 'users'}" in options.balancer_flags()
    monkeypatch.setenv("TICSLAB_AUTH_USERS", "/srv/users")
    options = up.options_from_args(parser.parse_args([]))
    assert "--auth-users=/srv/users" in options.balancer_flags()


def test_a_missing_users_file_is_refused_by_env_too(tmp_path: Path) -> None:
    env = {**os.environ, "TICSLAB_AUTH_USERS": str(tmp_path / "absent"), "TICSLAB_TOKEN": "t"}
    command = [*TICSLAB, "balancer", "--port", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 2 and "No such file" in done.stderr


def test_the_failure_map_is_bounded_and_forgets_old_failures() -> None:
    limiter = FailureLimiter(limit=2, window=10, addresses=3)
    for address in ("a", "b", "c", "d"):
        limiter.failed(address, 0.0)
    assert len(limiter) == 3 and limiter.retry_after("a", 1.0) is None  # a went first
    limiter.failed("d", 1.0)
    assert limiter.retry_after("d", 2.0) == 8.0
    assert limiter.retry_after("d", 10.5) is None  # one failure left in the window
    assert limiter.retry_after("d", 11.0) is None and len(limiter) == 2  # b, c


def test_the_verified_cache_is_bounded_and_expires() -> None:
    cache = VerifiedCache(seconds=5, entries=2)
    keys = [cache.key(b"Basic %d" % i) for i in range(3)]
    for key in keys:
        cache.add(key, "ana", 0.0)
    assert cache.user(keys[0], 1.0) is None and cache.user(keys[2], 1.0) == "ana"
    assert cache.user(keys[2], 5.0) is None


async def test_an_unknown_user_costs_a_check_as_dear_as_the_dearest_real_one() -> None:
    """No name can be told apart by a quicker refusal: the dummy hash has the file's highest
    cost, and an unknown name is checked against it (and refused even if it matched)."""
    lines = parse_users(f"{FIXED_APACHE_LINE}\nana:$2b$06${'a' * 53}\n")
    checker = Checker(lines)
    try:
        assert checker.dummy.startswith(b"$2b$06$")
        assert not await checker.check("nobody", b"not a password")  # the dummy's own password
        assert await checker.check("alumno", b"secreto")
    finally:
        checker.close()


def test_basic_credentials_take_only_basic_and_split_at_the_first_colon() -> None:
    assert basic_credentials(b"Basic " + base64.b64encode(b"ana:a:b")) == ("ana", b"a:b")
    assert basic_credentials(b"basic " + base64.b64encode(b"ana")) is None
    assert basic_credentials(b"Bearer x") is None
    assert basic_credentials(b"Basic " + b"A" * 2000) is None


def test_the_catalogues_have_the_same_keys() -> None:
    assert missing_keys(TEXT) == {}
    assert missing_keys(ERRORS) == {}
