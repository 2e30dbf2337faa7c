"""``ticslab up --tls`` / ``demo --tls``: the flags reach the balancer, bad ones are refused
before anything starts, and the banner's curl line works."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import httpx
import pytest
from support import free_port
from test_launcher import UpStack, balancer_config

from dashboard import web
from services.balancer.certificates import local_files
from services.launcher import cli as up
from services.launcher.stack import StackOptions, TlsOptions


def test_the_tls_flags_reach_the_balancer(tmp_path: Path) -> None:
    config = balancer_config("--tls", "--tls-port", "9443", "--tls-dir", str(tmp_path))
    assert (config.tls_enabled, config.tls_port, config.tls_dir) == (True, 9443, str(tmp_path))
    assert not config.redirect_http
    redirecting = balancer_config("--tls", "--redirect-http", "--clients", "0")
    assert redirecting.redirect_http
    assert not balancer_config().tls_enabled  # off unless asked


def test_the_users_files_reach_the_balancer_whole(tmp_path: Path) -> None:
    pair = local_files(tmp_path)
    config = balancer_config("--tls-cert", str(pair.cert), "--tls-key", str(pair.key))
    assert config.tls_enabled
    assert (config.tls_cert, config.tls_key) == (str(pair.cert), str(pair.key))


def problems_with(tls: TlsOptions, clients: int = 0) -> str:
    options = StackOptions(balancer_port=free_port(), first_server_port=free_port(), tls=tls)
    options.clients, options.servers = clients, 1
    return "; ".join(options.problems())


def test_bad_tls_options_are_refused_before_anything_starts(tmp_path: Path) -> None:
    one, other = local_files(tmp_path / "one"), local_files(tmp_path / "other")
    assert "go together" in problems_with(TlsOptions(cert=one.cert))
    assert "its own private key" in problems_with(TlsOptions(cert=one.cert, key=other.key))
    assert "not a readable file" in problems_with(TlsOptions(cert=tmp_path / "x", key=one.key))
    assert "needs TLS" in problems_with(TlsOptions(redirect_http=True))
    assert "--clients 0" in problems_with(TlsOptions(on=True, redirect_http=True), clients=1)
    taken = StackOptions(balancer_port=free_port(), first_server_port=free_port(), clients=0)
    taken.tls = TlsOptions(on=True, port=taken.balancer_port)
    assert "TLS port" in "; ".join(taken.problems())
    assert problems_with(TlsOptions(on=True, port=free_port())) == ""


def test_demo_opens_the_dashboard_over_https_when_tls_is_on() -> None:
    plain = StackOptions(balancer_port=8080)
    assert up.dashboard_url(plain) == "http://127.0.0.1:8080"
    assert up.dashboard_command(plain) == "ticslab dashboard --url http://127.0.0.1:8080"
    plain.tls = TlsOptions(on=True, port=9443)
    assert up.dashboard_url(plain) == "https://localhost:9443"


@pytest.mark.slow
def test_up_tls_prints_a_curl_line_that_works(tmp_path: Path) -> None:
    stack = UpStack(tmp_path, servers=1, clients=0)
    tls_port = free_port()
    stack.args += ["--tls", "--tls-port", str(tls_port), "--tls-dir", str(tmp_path / "tls")]
    try:
        stack.start()
        banner = stack.output()
        ca = tmp_path / "tls" / "ca.pem"
        assert f"CA         {ca}" in banner
        line = re.search(r"curl --cacert (\S+) (https://\S+)", banner)
        assert line is not None, banner
        assert line.groups() == (str(ca), f"https://localhost:{tls_port}/health")
        assert f"ticslab dashboard --url https://localhost:{tls_port} --ca {ca}" in banner
        context = ssl.create_default_context(cafile=line.group(1))
        answer = httpx.get(line.group(2), verify=context, timeout=5)
        assert answer.status_code == 200
        assert answer.json()["status"] == "ok"
    finally:
        stack.close()


def test_the_browser_tabs_get_the_ca_too(tmp_path: Path) -> None:
    ca = str(tmp_path / "ca.pem")
    options = web.web_options("https://localhost:9443", "t0ken", ca=ca)
    command = web.dashboard_command(options, 4242)
    assert f"--ca {ca}" in command
    assert "--ca" not in web.dashboard_command(web.web_options("http://x:1", "t0ken"), 1)
