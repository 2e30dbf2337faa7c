"""TLS termination at the balancer, on real processes: the HTTPS port beside the HTTP one,
the local CA made once and reused, the user's own certificate, bad files refused before
anything starts, X-Forwarded-Proto at the backend, and --redirect-http's 308."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from support import TICSLAB, ServiceProcess, free_port
from test_balancer_helpers import EchoBackend, balancer_process

from dashboard.api import BalancerClient, CaFileError, Unreachable
from dashboard.options import parse_options
from services.balancer.certificates import (
    CA_KEY_FILE,
    CERT_FILE,
    KEY_FILE,
    CertificateError,
    checked_user_files,
    local_files,
)
from services.balancer.cli import add_arguments, config_from_args
from services.balancer.tls import tls_files
from services.common import CA_FILE


def trusting(ca: Path) -> ssl.SSLContext:
    """A client context that trusts only ``ca`` (as ``curl --cacert``)."""
    return ssl.create_default_context(cafile=str(ca))


def tls_balancer(echoes: list[EchoBackend], *extra: str) -> tuple[ServiceProcess, int]:
    """A balancer (not yet started) with TLS on a free port, and that port."""
    tls_port = free_port()
    backends = [(e.name, e.url) for e in echoes]
    process = balancer_process(backends, "round_robin", "--tls-port", str(tls_port), *extra)
    return process, tls_port


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tls")


@pytest.fixture(scope="module")
def secure(echoes: list[EchoBackend], tls_dir: Path) -> Iterator[tuple[ServiceProcess, str]]:
    """A balancer with the local CA in ``tls_dir``, and its HTTPS base URL."""
    process, tls_port = tls_balancer(echoes, "--tls", "--tls-dir", str(tls_dir))
    yield process.start(), f"https://localhost:{tls_port}"
    process.close()


def test_https_handshake_with_the_generated_ca(
    secure: tuple[ServiceProcess, str], tls_dir: Path
) -> None:
    balancer, https = secure
    with httpx.Client(verify=trusting(tls_dir / CA_FILE), timeout=5) as client:
        answer = client.get(f"{https}/echo")
        by_address = client.get(https.replace("localhost", "127.0.0.1") + "/status")
    assert answer.status_code == 200
    assert answer.headers["X-Upstream-Server"] in ("server1", "server2")
    assert by_address.status_code == 200
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{https}/health", timeout=5)  # the system store does not know our CA
    assert httpx.get(f"{balancer.url}/echo", timeout=5).status_code == 200  # HTTP still there


def test_the_certificate_names_localhost_the_loopback_and_the_compose_service(
    secure: tuple[ServiceProcess, str], tls_dir: Path
) -> None:
    cert = x509.load_pem_x509_certificate((tls_dir / CERT_FILE).read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", "balancer"}
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tls_dir.iterdir()}
    assert modes[CA_KEY_FILE] == modes[KEY_FILE] == 0o600
    assert modes[CA_FILE] == modes[CERT_FILE] == 0o644


def test_x_forwarded_proto_says_how_the_client_came(
    secure: tuple[ServiceProcess, str], tls_dir: Path
) -> None:
    balancer, https = secure

    def proto_seen(url: str, claimed: str, **options: object) -> list[str]:
        answer = httpx.get(
            f"{url}/echo", headers={"X-Forwarded-Proto": claimed}, timeout=5, **options
        )
        return [v for k, v in answer.json()["headers"] if k == "x-forwarded-proto"]

    assert proto_seen(https, "http", verify=trusting(tls_dir / CA_FILE)) == ["https"]
    assert proto_seen(balancer.url, "https") == ["http"]  # the client's own copy is replaced


@pytest.mark.slow
def test_the_local_ca_is_reused_on_the_next_start(
    echoes: list[EchoBackend], secure: tuple[ServiceProcess, str], tls_dir: Path
) -> None:
    before = {p.name: p.read_bytes() for p in tls_dir.iterdir()}
    process, tls_port = tls_balancer(echoes, "--tls", "--tls-dir", str(tls_dir))
    try:
        process.start()
        answer = httpx.get(
            f"https://localhost:{tls_port}/health",
            verify=trusting(tls_dir / CA_FILE),
            timeout=5,
        )
    finally:
        process.close()
    assert answer.status_code == 200
    assert {p.name: p.read_bytes() for p in tls_dir.iterdir()} == before


def test_near_expiry_the_certificate_is_renewed_and_the_ca_kept(tmp_path: Path) -> None:
    first = local_files(tmp_path)
    ca, cert = first.ca.read_bytes(), first.cert.read_bytes()  # type: ignore[union-attr]
    assert local_files(tmp_path).cert.read_bytes() == cert
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=800)
    local_files(tmp_path, now=later)
    assert first.cert.read_bytes() != cert
    assert first.ca.read_bytes() == ca  # type: ignore[union-attr]
    much_later = later + datetime.timedelta(days=3650)
    local_files(tmp_path, now=much_later)
    assert first.ca.read_bytes() != ca  # type: ignore[union-attr]


@pytest.mark.slow
def test_a_users_certificate_and_key_are_served(echoes: list[EchoBackend], tmp_path: Path) -> None:
    own = local_files(tmp_path / "own")  # any PEM pair: here one made like mkcert's
    cert, key = tmp_path / "site.crt", tmp_path / "site.key"
    cert.write_bytes(own.cert.read_bytes())
    key.write_bytes(own.key.read_bytes())
    process, tls_port = tls_balancer(echoes, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        process.start()
        answer = httpx.get(
            f"https://localhost:{tls_port}/echo",
            verify=trusting(own.ca),  # type: ignore[arg-type]
            timeout=5,
        )
    finally:
        process.close()
    assert answer.status_code == 200


def refusals(*cases: list[str]) -> list[tuple[int, str]]:
    """The exit code and stderr of a balancer started with each of ``cases``, run at once."""
    runs = [
        subprocess.Popen(
            [*TICSLAB, "balancer", "--port", str(free_port()), "--token", "t", *flags],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for flags in cases
    ]
    return [(run.wait(timeout=30), run.communicate()[1]) for run in runs]


def test_the_users_files_are_checked_before_use(tmp_path: Path) -> None:
    one, other = local_files(tmp_path / "one"), local_files(tmp_path / "other")
    assert checked_user_files(one.cert, one.key).cert == one.cert
    with pytest.raises(CertificateError, match="not a readable file"):
        checked_user_files(tmp_path / "nope.pem", one.key)
    with pytest.raises(CertificateError, match="its own private key"):
        checked_user_files(one.cert, other.key)


@pytest.mark.slow
def test_unreadable_or_mismatched_files_or_a_taken_port_stop_it_in_one_line(
    tmp_path: Path,
) -> None:
    one, other = local_files(tmp_path / "one"), local_files(tmp_path / "other")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = str(held.getsockname()[1])
        answers = refusals(
            ["--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(one.key)],
            ["--tls-cert", str(one.cert), "--tls-key", str(other.key)],
            ["--tls-cert", str(one.cert)],
            ["--tls", "--tls-port", taken, "--tls-dir", str(tmp_path / "tls")],
        )
    said = [
        (2, "nope.pem: not a readable file"),
        (2, "not a PEM certificate and its own private key"),
        (2, "--tls-cert and --tls-key go together"),
        (3, f"('127.0.0.1', {taken}): address already in use"),  # uvicorn's line, and only it
    ]
    for (code, stderr), (expected_code, expected) in zip(answers, said, strict=True):
        assert code == expected_code, stderr
        assert expected in stderr
        assert "Traceback" not in stderr
    for _, stderr in answers[:3]:
        assert stderr.strip().count("\n") <= 1  # the --token warning, then the refusal


def test_the_variables_turn_tls_on_and_a_bad_one_is_named() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    config = config_from_args(args, {"TICSLAB_TLS": "1", "TICSLAB_TLS_PORT": "9443"})
    assert config.tls_enabled and config.tls_port == 9443
    assert not config_from_args(args, {"TICSLAB_TLS": "0"}).tls_enabled
    with pytest.raises(ValueError, match="TICSLAB_TLS: expected 1 or 0"):
        config_from_args(args, {"TICSLAB_TLS": "maybe"})
    with pytest.raises(ValueError, match="--redirect-http needs TLS"):
        tls_files(config_from_args(args, {"TICSLAB_REDIRECT_HTTP": "1"}))


@pytest.mark.slow  # 1.4-3 s; .ci/run runs it: the default run stays near 3 minutes
def test_redirect_http_answers_308_to_https_but_for_health(
    echoes: list[EchoBackend], tmp_path: Path
) -> None:
    process, tls_port = tls_balancer(echoes, "--tls", "--tls-dir", str(tmp_path), "--redirect-http")
    try:
        process.start()
        moved = httpx.post(f"{process.url}/tareas?x=1", json={"title": "a"}, timeout=5)
        health = httpx.get(f"{process.url}/health", timeout=5)
        strange = httpx.get(f"{process.url}/tareas", headers={"Host": "a b"}, timeout=5)
        followed = httpx.get(
            f"http://localhost:{process.port}/echo?y=2",
            follow_redirects=True,
            verify=trusting(tmp_path / CA_FILE),
            timeout=5,
        )
    finally:
        process.close()
    assert moved.status_code == 308
    assert moved.headers["Location"] == f"https://127.0.0.1:{tls_port}/tareas?x=1"
    assert health.status_code == 200
    assert strange.status_code == 400
    assert strange.json()["code"] == "redirect_bad_host"
    assert followed.status_code == 200
    assert followed.json()["query"] == "y=2"
    assert [v for k, v in followed.json()["headers"] if k == "x-forwarded-proto"] == ["https"]


async def test_the_dashboard_reaches_an_https_balancer_with_ca(
    secure: tuple[ServiceProcess, str], tls_dir: Path
) -> None:
    _, https = secure
    options = parse_options(["--url", https, "--ca", str(tls_dir / CA_FILE)])
    trusting_client = BalancerClient(options.url, ca=options.ca)
    system_store = BalancerClient(options.url)
    try:
        status = await trusting_client.status()
        with pytest.raises(Unreachable, match="not trusted: use --ca FILE"):
            await system_store.status()
    finally:
        await trusting_client.aclose()
        await system_store.aclose()
    assert {s["name"] for s in status["servers"]} == {"server1", "server2"}
    with pytest.raises(CaFileError, match="not a readable PEM CA file"):
        BalancerClient(https, ca=str(tls_dir / "missing.pem"))


def test_the_dashboard_refuses_an_unreadable_ca_in_one_line_in_spanish(tmp_path: Path) -> None:
    missing = str(tmp_path / "ca.pem")
    done = subprocess.run(
        [*TICSLAB, "dashboard", "--url", "https://localhost:1", "--ca", missing, "--lang", "es"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"--ca {missing}: no es un archivo PEM de CA que se pueda leer "
        "([Errno 2] No such file or directory)"
    )
