"""Every flag of ``ticslab balancer`` has a ``TICSLAB_*`` variable (for Compose's .env), named
in ``--help``; a flag wins over its variable, and a bad value is a one-line usage error."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from services.balancer import cli
from services.balancer.config import BalancerConfig

# A valid value for each flag's variable that differs from the default, and where it lands.
SAMPLES: dict[str, tuple[str, str, object]] = {
    "host": ("0.0.0.0", "host", "0.0.0.0"),
    "port": ("9090", "port", 9090),
    "backend": ("a=http://a:1 weight=2,b=http://b:2", "weights", {"a": 2}),
    "algorithm": ("ip_hash", "algorithm", "ip_hash"),
    "connect_timeout": ("1.5", "connect_timeout", 1.5),
    "response_timeout": ("7", "response_timeout", 7.0),
    "request_timeout": ("11", "request_timeout", 11.0),
    "keep_alive_timeout": ("6", "keep_alive_timeout", 6.0),
    "upstream_keepalive": ("0.5", "upstream_keepalive", 0.5),
    "check_interval": ("3", "check_interval", 3.0),
    "fast_check_interval": ("0.4", "fast_check_interval", 0.4),
    "check_timeout": ("2.5", "check_timeout", 2.5),
    "max_body_size": ("1000", "max_body_bytes", 1000),
    "max_header_size": ("2000", "max_header_bytes", 2000),
    "max_connections": ("50", "max_connections", 50),
    "allowed_host": ("lab.example, other", "allowed_hosts", ["lab.example", "other"]),
    "health_path": ("/ping", "check_path", "/ping"),
    "slow_start": ("20", "slow_start", 20.0),
    "eject_after_5xx": ("4", "eject_after_5xx", 4),
    "eject_time": ("15", "eject_time", 15.0),
    "fall": ("5", "fall", 5),
    "rise": ("4", "rise", 4),
    "retries": ("0", "max_retries", 0),
    "compress": ("gzip, br", "compress", ("gzip", "br")),
    "log_level": ("warning", "", "warning"),  # run() reads it: not a BalancerConfig field
    "token": ("s3cret", "token", "s3cret"),
    "driver": ("none", "driver", "none"),
    "discover": ("docker", "discover", "docker"),
    "discover_name": (
        "server.ticslab.svc.cluster.local.",
        "discover_name",
        "server.ticslab.svc.cluster.local.",
    ),
    "discover_port": ("8000", "discover_port", 8000),
    "discover_interval": ("2.5", "discover_interval", 2.5),
    "discover_dns": ("127.0.0.11:5353", "discover_dns", ("127.0.0.11", 5353)),
    "auth_users": ("/srv/users", "auth_users", "/srv/users"),
    "tls": ("1", "tls", True),
    "tls_port": ("9443", "tls_port", 9443),
    "tls_cert": ("site.crt", "tls_cert", "site.crt"),
    "tls_key": ("site.key", "tls_key", "site.key"),
    "tls_dir": ("/srv/tls", "tls_dir", "/srv/tls"),
    "redirect_http": ("1", "redirect_http", True),
}


def parser() -> argparse.ArgumentParser:
    made = argparse.ArgumentParser()
    cli.add_arguments(made)
    return made


def test_every_flag_has_a_variable_named_in_its_help_that_sets_it() -> None:
    flags = cli.settings_flags(parser())
    assert {action.dest for action in flags} == SAMPLES.keys()  # a new flag needs a sample
    default = BalancerConfig()
    for action in flags:
        name = cli.variable(action.dest)
        assert f"[env {name}]" in (action.help or ""), action.dest
        text, field, expected = SAMPLES[action.dest]
        env = {name: text}
        if action.dest == "discover":
            env["TICSLAB_BACKENDS"] = "a=http://a:1"
        values = cli.given_values(parser().parse_args([]), env)
        if not field:
            assert values[action.dest] == expected
            continue
        config = cli.config_from_args(parser().parse_args([]), env)
        assert getattr(config, field) == expected != getattr(default, field), name


def test_a_flag_wins_over_its_variable_and_an_empty_variable_is_unset() -> None:
    env = {"TICSLAB_CHECK_TIMEOUT": "3", "TICSLAB_FALL": "", "TICSLAB_RETRIES": " "}
    config = cli.config_from_args(parser().parse_args(["--check-timeout", "0.7"]), env)
    assert config.check_timeout == 0.7
    assert (config.fall, config.max_retries) == (
        BalancerConfig().fall,
        BalancerConfig().max_retries,
    )
    config = cli.config_from_args(parser().parse_args([]), env)
    assert config.check_timeout == 3.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TICSLAB_CHECK_TIMEOUT", "soon"),
        ("TICSLAB_CHECK_TIMEOUT", "0"),
        ("TICSLAB_CHECK_INTERVAL", "nan"),
        ("TICSLAB_RESPONSE_TIMEOUT", "inf"),
        ("TICSLAB_FALL", "0"),
        ("TICSLAB_RISE", "1.5"),
        ("TICSLAB_RETRIES", "11"),
        ("TICSLAB_PORT", "http"),
        ("TICSLAB_DRIVER", "podman"),
        ("TICSLAB_BACKENDS", "server1"),
        ("TICSLAB_DISCOVER", "consul"),
        ("TICSLAB_DISCOVER_NAME", "tasks server"),
        ("TICSLAB_DISCOVER_INTERVAL", "0.01"),
        ("TICSLAB_DISCOVER_DNS", "dns.example"),
    ],
)
def test_a_bad_variable_is_named_in_one_line(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"^{name}: ") as error:
        cli.config_from_args(parser().parse_args([]), {name: value})
    assert "\n" not in str(error.value)


def test_the_command_exits_2_with_one_line_naming_the_variable() -> None:
    env = {**os.environ, "TICSLAB_FALL": "many", "TICSLAB_TOKEN": "t"}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "balancer", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "ticslab balancer: TICSLAB_FALL: expected a whole number, 1 or more; got 'many'"
    ]
