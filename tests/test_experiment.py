"""``ticslab experiment``: each scenario on a real throwaway stack, its JSON checked for the
lesson it teaches; the reports' rendering and the flags' checks on fixed data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from pgserver import PostgresServer
from psycopg.conninfo import conninfo_to_dict
from rich.console import Console
from support import TICSLAB, free_port, wait_until

from services.cli import main
from services.experiment import html, terminal
from services.experiment.database import beside
from services.experiment.failover import add_timeline
from services.experiment.i18n import CATALOGUE
from services.experiment.load import Call, Outcome
from services.experiment.result import LAB, Claim, Result, combine
from services.lang import Translator

RUN_SECONDS = 120  # a bound for each run; the small settings below take 5-15 s


def experiment(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Any]:
    """Run ``ticslab experiment ARGS --json --html`` in an empty folder with its own state
    folder; returns the process and the JSON, after checking nothing else was written."""
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "TICSLAB_TOKEN": ""}
    finished = subprocess.run(
        [*TICSLAB, "experiment", *args, "--json", "result.json", "--html", "report.html"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS,
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    # A throwaway stack: no data/ folder, no token file, only the two reports.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "result.json"]
    report = (tmp_path / "report.html").read_text()
    assert "<svg" in report and not any(s in report for s in ("<script", "src=", "href="))
    return finished, json.loads((tmp_path / "result.json").read_text())


@pytest.mark.slow
def test_algorithms_show_when_each_algorithm_fits(tmp_path: Path) -> None:
    template = Path(__file__).parent.parent / "docs" / "examples" / "mi_algoritmo.py"
    _, result = experiment(
        tmp_path, "algorithms", "--requests", "160", "--slow-ms", "200", "--repeat", "2",
        "--algorithm", f"{template}:MiAlgoritmo",
    )  # fmt: skip
    assert result["scenario"] == "algorithms" and result["repeats"] == 2
    rows = {row["algorithm"]: row for row in result["results"]}
    # The five built-ins, then the student's class measured beside them.
    assert list(rows) == [
        "random", "round_robin", "least_connections", "response_time", "ip_hash", "dos_al_azar"
    ]  # fmt: skip
    for row in rows.values():
        assert set(row) >= {"share", "p50_ms", "p95_ms", "p99_ms", "errors", "spread"}
        assert row["errors"] == 0 and row["requests"] == 160 and row["algorithm_errors"] == 0
        assert [run["requests"] for run in row["runs"]] == [160, 160]
    blind = min(rows["random"]["p95_ms"], rows["round_robin"]["p95_ms"])
    assert rows["response_time"]["p95_ms"] < blind
    assert rows["least_connections"]["share"]["server2"] < 0.25
    assert all(abs(share - 0.5) <= 0.05 for share in rows["round_robin"]["share"].values())
    # By default six client addresses, each always on one server, and not all on the same one.
    clients = rows["ip_hash"]["clients"]
    assert set(clients) == {f"127.0.0.{n}" for n in range(2, 8)}
    assert all(len(servers) == 1 for servers in clients.values())
    assert {server for servers in clients.values() for server in servers} == {"server1", "server2"}
    assert rows["random"]["affinity"] < 1.0
    assert all(claim["held"] and claim["margin"] >= 0 for claim in result["claims"])
    assert result["notes"] == [
        "IP hash put 4 client addresses on server1, 2 client addresses on server2, always the "
        "same ones: it keeps affinity, it does not look at load"
    ]


@pytest.mark.slow
def test_failover_retries_hide_a_crash_and_no_retries_show_it(tmp_path: Path) -> None:
    _, result = experiment(tmp_path, "failover", "--seconds", "3", "--kill-at", "1")
    assert result["repeats"] == 3
    runs = {row["run"]: row for row in result["results"]}
    # Each repeat killed server1 again: the second and third were started and came back.
    assert all(run["failed"] > 0 for run in runs["no retries"]["runs"])
    assert runs["retries"]["failed"] == 0 and runs["retries"]["retries"] == 2
    assert runs["no retries"]["failed"] > 0 and runs["no retries"]["retries"] == 0
    assert all(row["lost"] == 0 and row["created"] > 100 for row in runs.values())
    # The chart's series, by when each answer came back: before the kill nothing failed.
    before = int(1 / result["series"]["bucket_seconds"])  # all repeats added up
    assert sum(result["series"]["no retries"]["failed"][:before]) == 0
    assert all(claim["held"] for claim in result["claims"])


def test_the_failover_timeline_counts_each_answer_when_it_came_back() -> None:
    """A request begun just before the kill (0.95 s) and cut by it fails after the kill."""
    call = Call("POST", "/tareas")
    series: dict[str, list[int]] = {}
    add_timeline(series, [Outcome(call, 0.95, 0.2, 0), Outcome(call, 0.05, 0.02, 201)], 2.0)
    assert series["failed"][11] == 1 and sum(series["failed"]) == 1
    assert series["ok"][0] == 1 and sum(series["ok"]) == 1


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@h:5/lab", "postgresql://u:p@h:5/scratch"),
        # libpq reads dbname= over the path: left in, the class's database would be written.
        (
            "postgresql://u@h/lab?dbname=lab&sslmode=disable",
            "postgresql://u@h/scratch?sslmode=disable",
        ),
        # No host (a Unix socket): the "//" stays, or libpq refuses the URL.
        ("postgresql:///lab?host=/run/postgresql", "postgresql:///scratch?host=/run/postgresql"),
    ],
)
def test_the_throwaway_database_is_named_so_libpq_reads_it(url: str, expected: str) -> None:
    assert beside(url, "scratch") == expected
    assert conninfo_to_dict(expected)["dbname"] == "scratch"


def test_a_database_that_cannot_be_used_is_said_before_any_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"postgresql://student:secret@127.0.0.1:{free_port()}/lab"
    assert main(["experiment", "race", "--storage", url]) == 1
    said = " ".join(capsys.readouterr().out.split())  # unwrapped
    assert "could not make a throwaway database on postgresql://student:***@" in said
    assert "secret" not in said and "Connection refused" in said


def test_bad_settings_are_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for args, message in (
        (["algorithms", "--requests", "0"], "--requests is 1 to 100000"),
        (["failover", "--seconds", "2", "--kill-at", "3"], "--kill-at is 0 or more"),
        (["race", "--posts", "100000"], "--posts is 1 to 500"),
        (["race", "--storage", "file:tasks.json"], "--storage is a PostgreSQL server's"),
    ):
        assert main(["experiment", *args]) == 2
        assert message in capsys.readouterr().err


def hostile_result() -> Result:
    """An algorithms result whose plugin name is markup and script."""
    name = "<script>alert(1)</script>[/b][bold]\x1b]0;x\x07"
    row = {
        "algorithm": name, "requests": 10, "share": {"server1": 0.5, "server2": 0.5},
        "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0, "errors": 0, "affinity": 0.5,
        "clients": {"127.0.0.1": {"server1": 5, "server2": 5}}, "algorithm_errors": 3,
    }  # fmt: skip
    row = {**combine([row], ["share", "p50_ms", "p95_ms", "p99_ms"]), "algorithm_errors": 3}
    claim = Claim("locked_keeps_all", LAB, (1,), 0, False, "against_lost")
    settings = {"plugin": name, "ip_clients": 0, "requests": 10, "concurrency": 1, "slow_ms": 9}
    return Result("algorithms", settings, [row], [claim], {}, 1.0)


def test_reports_show_names_from_a_plugin_as_text() -> None:
    result = hostile_result()
    t = Translator(CATALOGUE, "en")
    page = html.page(result, t)
    assert "<script>" not in page and "&lt;script&gt;" in page
    console = Console(width=120, record=True, color_system=None)
    console.print(terminal.render(result, t))
    text = console.export_text()
    assert "\x1b" not in text
    # As text wherever it is shown: the table and the failing pick's line whole, the chart's
    # narrow name column folded over lines.
    assert text.count("[/b][bold]\\x1b]0;x\\x07") == 2, text
    assert "][bold]\\x1b]0;" in text
    assert "its pick failed 3 times" in text and "did not hold" in text
    assert "its pick failed 3 times" in page


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_experiment_leaves_no_process_and_no_folder(
    tmp_path: Path, sig: signal.Signals
) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    process = subprocess.Popen(
        [*TICSLAB, "experiment", "algorithms"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        me = psutil.Process(process.pid)
        # The stack is up when its folder holds a tasks file and three processes run.
        wait_until(
            lambda: len(me.children()) == 3 and any(tmp_path.glob("*/tasks.json")),
            timeout=30,
            what="the experiment's stack",
        )
        children = me.children(recursive=True)
        process.send_signal(sig)
        assert process.wait(timeout=30) == 128 + sig
        wait_until(
            lambda: not any(c.is_running() and c.status() != "zombie" for c in children),
            what="the stack's processes to end",
        )
        assert list(tmp_path.iterdir()) == []
    finally:
        process.kill()
        process.wait()


@pytest.mark.slow
def test_race_loses_tasks_without_the_lock_and_none_with_it(tmp_path: Path) -> None:
    _, result = experiment(tmp_path, "race")
    rows = {row["storage"]: row for row in result["results"]}
    assert result["repeats"] == 3 and all(len(row["runs"]) == 3 for row in rows.values())
    for run in rows["locked"]["runs"]:
        assert run == {
            "storage": "locked", "sent": 200, "expected": 200, "stored": 200, "lost": 0,
            "unanswered": 0, "duplicate_ids": 0, "by_server": {"server1": 100, "server2": 100},
        }  # fmt: skip
    for run in rows["unlocked"]["runs"]:
        assert run["expected"] == 200 and run["lost"] > 0
        assert run["stored"] + run["lost"] == run["expected"]
    assert all(claim["held"] for claim in result["claims"])


@pytest.mark.slow
def test_race_on_postgresql_loses_none_with_a_transaction_and_some_without(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """The database rows follow the file's, on a throwaway database dropped at the end."""
    url = postgres.create_database("race_home")
    _, result = experiment(tmp_path, "race", "--repeat", "2", "--storage", url)
    rows = {row["storage"]: row for row in result["results"]}
    assert list(rows) == ["locked", "unlocked", "transaction", "no_transaction"]
    for run in rows["transaction"]["runs"]:
        assert run["expected"] == 200 and run["lost"] == 0 and run["duplicate_ids"] == 0
        assert run["by_server"] == {"server1": 100, "server2": 100}
    for run in rows["no_transaction"]["runs"]:
        assert run["expected"] == 200 and run["lost"] > 0
        assert run["stored"] + run["lost"] == run["expected"]
    keys = [claim["id"] for claim in result["claims"]]
    assert keys[2:] == ["transaction_keeps_all", "no_transaction_loses"], keys
    assert all(claim["held"] for claim in result["claims"])
    with psycopg.connect(url) as conn:  # the throwaway database is gone; the named one untouched
        names = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
        assert not any(name.startswith("ticslab_experiment_") for name in names)
        assert conn.execute(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'tasks'"
        ).fetchone() == (0,)
