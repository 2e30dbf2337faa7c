"""Compression at the edge (``--compress``): a real balancer in front of a real backend, and
what the client received decompressed for real (gzip, Brotli, zstd)."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import threading
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import brotli
import httpx
import pytest
import uvicorn
from fixtures.dashboard.balancer import FixtureBalancer, fixture_app, loaded
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from support import TICSLAB, ServiceProcess, free_port, free_run, wait_until
from test_balancer_helpers import balancer_process, status_of
from test_launcher import UpStack, balancer_config
from textual.widgets import Label

from dashboard.compression import size
from services.balancer.compression import (
    COMPRESSOR_BYTES,
    ENCODINGS,
    MAX_ACCEPT_ENTRIES,
    MIN_BYTES,
    accepted_codings,
    choose,
    parse_encodings,
)
from services.balancer.config import BalancerConfig
from services.balancer.edge import FDS_PER_CONNECTION, STREAM_BYTES, bytes_per_connection
from services.launcher import cli as up
from services.launcher import demo
from services.launcher.stack import StackOptions
from services.protocol import connection_cap

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

LINE = b'{"id": 1, "title": "Comprar pan", "completed": false, "created_at": "2026-01-01"}\n'


def text_of(size: int) -> bytes:
    """``size`` bytes of the lab's kind of JSON text."""
    return (LINE * (size // len(LINE) + 1))[:size]


def gunzip(data: bytes) -> bytes:
    return zlib.decompress(data, 16 + zlib.MAX_WBITS)


DECODE = {"gzip": gunzip, "br": brotli.decompress, "zstd": zstd.decompress}


class Backend:
    """A task-server stand-in on 127.0.0.1 (uvicorn in a thread) whose answers the test
    shapes: size, type, encoding, ETag, status, and a stream that waits for the test."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.release = threading.Event()  # lets /stream send its second piece
        self.streamed_all = threading.Event()
        config = uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="error")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def _app(self) -> Starlette:
        async def health(request: Request) -> Response:
            return Response("ok", media_type="text/plain")

        async def sized(request: Request) -> Response:
            query = request.query_params
            headers = {}
            for name in ("etag", "content-encoding", "content-range", "cache-control", "vary"):
                if name in query:
                    headers[name] = query[name]
            body = text_of(int(request.path_params["size"]))
            status = int(query.get("status", "200"))
            kind = query.get("type", "application/json")
            if status in (204, 304):
                return Response(status_code=status, headers=headers)
            return Response(body, status, headers=headers, media_type=kind)

        async def stream(request: Request) -> Response:
            async def pieces() -> AsyncIterator[bytes]:
                yield text_of(2 * MIN_BYTES)
                await asyncio.to_thread(self.release.wait, 20)
                yield text_of(3 * MIN_BYTES)
                self.streamed_all.set()

            return StreamingResponse(pieces(), media_type="text/plain")

        return Starlette(
            routes=[
                Route("/health", health),
                Route("/sized/{size:int}", sized, methods=["GET", "HEAD"]),
                Route("/stream", stream),
            ]
        )

    def start(self) -> Backend:
        self._thread.start()
        wait_until(lambda: self._server.started, timeout=10, what="compression backend")
        return self

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    server = Backend().start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def balancer(backend: Backend) -> Iterator[ServiceProcess]:
    process = balancer_process(
        [("server1", backend.url)], "round_robin", "--compress", "br,zstd,gzip"
    )
    process.start()
    yield process
    process.close()


def fetch(url: str, accept: str | None, method: str = "GET") -> tuple[httpx.Response, bytes]:
    """The answer and its body exactly as sent (not decoded by httpx)."""
    headers = {} if accept is None else {"accept-encoding": accept.encode()}
    with httpx.Client(timeout=10) as client:
        request = client.build_request(method, url, headers=headers)
        if accept is None:
            del request.headers["accept-encoding"]  # httpx's own default
        response = client.send(request, stream=True)
        raw = b"".join(response.iter_raw())
        response.close()
    return response, raw


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("size", [20_000, 300_000])  # held whole; streamed (past HOLD_BYTES)
def test_each_encoding_decompresses_to_the_servers_answer(
    balancer: ServiceProcess, encoding: str, size: int
) -> None:
    response, raw = fetch(balancer.url + f"/sized/{size}", encoding)
    assert response.headers["content-encoding"] == encoding
    assert DECODE[encoding](raw) == text_of(size)
    assert len(raw) < size / 5  # the lab's JSON shrinks a lot
    assert "content-length" not in response.headers
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.headers["vary"] == "Accept-Encoding"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("gzip", "gzip"),
        ("gzip;q=1, br;q=0.5", "gzip"),
        ("gzip;q=0.5, zstd;q=0.8, br;q=0.2", "zstd"),
        ("gzip, br, zstd", "br"),  # a tie: the order --compress gave
        ("x-gzip", "gzip"),
        ("*", "br"),
        ("*;q=0.5, gzip", "gzip"),
        ("*, br;q=0", "zstd"),
        ("deflate, identity;q=0, gzip;q=0.1", "gzip"),
        ("GZIP;Q=0.9", "gzip"),
        ("br;q=0, gzip;q=0, zstd;q=0", None),
        ("identity", None),
        ("", None),
        ("gzip;q=2", None),  # out of range: the entry is ignored
        ("gzip;q=0.1234", None),  # more than 3 decimals
        ("gzip;level=9", None),
    ],
)
def test_the_encoding_follows_the_q_values(
    balancer: ServiceProcess, accept: str, expected: str | None
) -> None:
    response, raw = fetch(balancer.url + "/sized/4096", accept)
    assert response.headers.get("content-encoding") == expected
    decoded = raw if expected is None else DECODE[expected](raw)
    assert decoded == text_of(4096)


def test_no_accept_encoding_is_answered_as_it_is(balancer: ServiceProcess) -> None:
    response, raw = fetch(balancer.url + "/sized/4096", None)
    assert "content-encoding" not in response.headers
    assert raw == text_of(4096)
    assert response.headers["content-length"] == "4096"
    assert response.headers["vary"] == "Accept-Encoding"  # it could have been compressed


def test_small_answers_go_as_they_are_unless_identity_is_refused(
    balancer: ServiceProcess,
) -> None:
    small = balancer.url + f"/sized/{MIN_BYTES - 1}"
    response, raw = fetch(small, "gzip, br")
    assert "content-encoding" not in response.headers
    assert response.headers["content-length"] == str(MIN_BYTES - 1)
    assert raw == text_of(MIN_BYTES - 1)
    response, raw = fetch(small, "gzip, identity;q=0")
    assert response.headers["content-encoding"] == "gzip"
    assert gunzip(raw) == text_of(MIN_BYTES - 1)
    response, _ = fetch(balancer.url + f"/sized/{MIN_BYTES}", "gzip")
    assert response.headers["content-encoding"] == "gzip"


@pytest.mark.parametrize(
    "query",
    [
        "content-encoding=gzip",  # already encoded
        "type=image/png",
        "type=application/octet-stream",
        "status=206&content-range=bytes%200-4095/9000",
        "content-range=bytes%200-4095/4096",
        "cache-control=no-transform",
        "status=404",
    ],
)
def test_answers_that_are_not_compressed(balancer: ServiceProcess, query: str) -> None:
    response, raw = fetch(balancer.url + f"/sized/4096?{query}", "gzip, br, zstd")
    assert response.headers.get("content-encoding") == (
        "gzip" if query.startswith("content-encoding") else None
    )
    assert raw == text_of(4096)
    assert response.headers["content-length"] == "4096"


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_answers_are_untouched(balancer: ServiceProcess, status: int) -> None:
    response, raw = fetch(balancer.url + f"/sized/4096?status={status}", "gzip")
    assert response.status_code == status
    assert "content-encoding" not in response.headers
    assert raw == b""


def test_head_is_untouched(balancer: ServiceProcess) -> None:
    response, raw = fetch(balancer.url + "/sized/4096", "gzip", method="HEAD")
    assert "content-encoding" not in response.headers
    assert response.headers["content-length"] == "4096"
    assert raw == b""


def test_etag_becomes_weak_and_vary_is_merged(balancer: ServiceProcess) -> None:
    response, _ = fetch(balancer.url + '/sized/4096?etag="v1"&vary=Accept-Language', "br")
    assert response.headers["etag"] == 'W/"v1"'
    assert response.headers.get_list("vary") == ["Accept-Language", "Accept-Encoding"]
    response, _ = fetch(balancer.url + '/sized/4096?etag=W/"v2"&vary=accept-encoding', "br")
    assert response.headers["etag"] == 'W/"v2"'
    assert response.headers.get_list("vary") == ["accept-encoding"]
    response, _ = fetch(balancer.url + '/sized/4096?etag="v3"', "identity")
    assert response.headers["etag"] == '"v3"'  # not compressed: the same bytes


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
def test_a_slow_streams_first_piece_arrives_before_the_server_ends(
    backend: Backend, balancer: ServiceProcess, encoding: str
) -> None:
    backend.release.clear()
    backend.streamed_all.clear()
    decoders = {
        "gzip": zlib.decompressobj(16 + zlib.MAX_WBITS).decompress,
        "br": brotli.Decompressor().process,
        "zstd": zstd.ZstdDecompressor().decompress,
    }
    decode = decoders[encoding]
    received = b""
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "GET", balancer.url + "/stream", headers={"accept-encoding": encoding}
        ) as response,
    ):
        assert response.headers["content-encoding"] == encoding
        pieces = response.iter_raw()
        while len(received) < 2 * MIN_BYTES:
            received += decode(next(pieces))
        assert received == text_of(2 * MIN_BYTES)
        assert not backend.streamed_all.is_set()  # the server had not sent the rest yet
        backend.release.set()
        for piece in pieces:
            received += decode(piece)
    assert received == text_of(2 * MIN_BYTES) + text_of(3 * MIN_BYTES)


def test_status_counts_the_bytes_before_and_after(balancer: ServiceProcess) -> None:
    before = status_of(balancer)["compression"]
    sent = {"gzip": 0, "br": 0}
    for encoding in ("gzip", "br"):
        for _ in range(10):
            _, raw = fetch(balancer.url + "/sized/5000", encoding)
            sent[encoding] += len(raw)
    fetch(balancer.url + "/sized/5000", "identity")  # not compressed: not counted
    fetch(balancer.url + "/sized/100", "gzip")  # too small: not counted
    after = status_of(balancer)["compression"]
    assert after["encodings"] == ["br", "zstd", "gzip"]
    for name in ("gzip", "br"):
        old = before["by_encoding"].get(name, {"answers": 0, "bytes_in": 0, "bytes_out": 0})
        new = after["by_encoding"][name]
        assert new["answers"] - old["answers"] == 10
        assert new["bytes_in"] - old["bytes_in"] == 10 * 5000
        assert new["bytes_out"] - old["bytes_out"] == sent[name]
    assert after["answers"] - before["answers"] == 20
    assert after["bytes_in"] - before["bytes_in"] == 100_000
    assert after["bytes_out"] - before["bytes_out"] == sum(sent.values())
    assert after["ratio"] == round(after["bytes_out"] / after["bytes_in"], 4)
    metrics = {
        (sample.labels["encoding"], sample.labels["stage"]): sample.value
        for family in text_string_to_metric_families(httpx.get(balancer.url + "/metrics").text)
        if family.name == "ticslab_balancer_compressed_bytes"
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    for name, counts in status_of(balancer)["compression"]["by_encoding"].items():
        assert metrics[(name, "in")] == counts["bytes_in"]
        assert metrics[(name, "out")] == counts["bytes_out"]


@pytest.mark.slow  # a balancer of its own: ~2 s
def test_off_by_default(backend: Backend) -> None:
    process = balancer_process([("server1", backend.url)]).start()
    try:
        response, raw = fetch(process.url + "/sized/5000", "gzip, br")
        compression = status_of(process)["compression"]
    finally:
        process.close()
    assert "content-encoding" not in response.headers and "vary" not in response.headers
    assert raw == text_of(5000)
    assert compression == {
        "encodings": [],
        "min_bytes": MIN_BYTES,
        "answers": 0,
        "bytes_in": 0,
        "bytes_out": 0,
        "ratio": None,
        "by_encoding": {},
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("off", ()),
        ("gzip", ("gzip",)),
        (" Br , gzip ", ("br", "gzip")),
        ("zstd,br,gzip", ("zstd", "br", "gzip")),
    ],
)
def test_compress_values(text: str, expected: tuple[str, ...]) -> None:
    assert parse_encodings(text) == expected


@pytest.mark.parametrize("text", ["", "deflate", "gzip,gzip", "gzip,", "on", "gzip br"])
def test_bad_compress_values_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="expected 'off' or some of br,zstd,gzip"):
        parse_encodings(text)


@pytest.mark.parametrize(
    ("args", "env", "said"),
    [
        (["--compress", "deflate"], {}, "--compress: expected 'off' or some of br,zstd,gzip"),
        ([], {"TICSLAB_COMPRESS": "lz4"}, "TICSLAB_COMPRESS: expected 'off' or some of"),
    ],
)
def test_the_balancer_refuses_a_bad_flag_or_variable(
    args: list[str], env: dict[str, str], said: str
) -> None:
    command = [*TICSLAB, "balancer", "--port", str(free_port()), *args]
    done = subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert said in done.stderr
    assert "Traceback" not in done.stderr


def test_an_accept_encoding_past_its_bounds_is_not_read() -> None:
    many = ", ".join(["x"] * MAX_ACCEPT_ENTRIES + ["gzip"])
    assert choose(many, ("gzip",)).encoding is None
    assert choose("gzip" + " " * 2000, ("gzip",)).encoding is None
    assert accepted_codings("gzip;q=0.5, gzip") == {"gzip": 0.5}  # the first one counts


header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=200)
pieces = st.lists(
    st.tuples(
        st.sampled_from(["gzip", "br", "zstd", "*", "identity", "x-gzip", "GZip", "", "\x7f"]),
        st.one_of(st.none(), st.sampled_from(["0", "1", "0.5", "1.000", "2", "-1", "0.0001", "x"])),
    ),
    max_size=20,
).map(lambda entries: ", ".join(n if q is None else f"{n};q={q}" for n, q in entries))


@given(st.one_of(header_text, pieces))
def test_any_accept_encoding_gives_an_offered_encoding_or_none(value: str) -> None:
    for offered in (ENCODINGS, ("gzip",), ()):
        choice = choose(value, offered)
        assert choice.encoding is None or choice.encoding in offered
        codings = accepted_codings(value)
        quality = {name: codings.get(name, codings.get("*", 0.0)) for name in offered}
        if choice.encoding is None:
            assert not any(quality.values())
        else:  # the best the client values, the first offered among equals
            best = max(quality.values())
            assert quality[choice.encoding] == best > 0
            assert choice.encoding == next(n for n in offered if quality[n] == best)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.one_of(header_text, pieces))
def test_the_balancer_answers_any_accept_encoding(balancer: ServiceProcess, value: str) -> None:
    value = value.replace("\x7f", "").strip()  # what an HTTP client cannot send
    response, raw = fetch(balancer.url + "/sized/2048", value)
    assert response.status_code == 200
    encoding = response.headers.get("content-encoding")
    assert (raw if encoding is None else DECODE[encoding](raw)) == text_of(2048)


@pytest.mark.parametrize("lang", ["en", "es"])
def test_ticslab_up_refuses_a_bad_value_before_starting(lang: str) -> None:
    first = free_run(2)
    options = StackOptions(
        servers=1, clients=0, balancer_port=first, first_server_port=first + 1, lang=lang
    )
    options.compress = "gzip,lz4"
    said = {
        "en": "--compress is 'off' or some of br,zstd,gzip separated by commas, each once; "
        "got 'gzip,lz4'",
        "es": "--compress es 'off' o algunas de br,zstd,gzip separadas por comas, cada una una "
        "vez; recibí 'gzip,lz4'",
    }
    assert options.problems() == [said[lang]]
    options.compress = "zstd,gzip"
    assert options.problems() == []
    assert "--compress=zstd,gzip" in options.balancer_flags()


@pytest.mark.parametrize(
    ("lang", "said"),
    [
        ("en", "compressed: {percent}% of {before} ({saved} saved)"),
        ("es", "comprimido: {percent}% de {before} ({saved} ahorrados)"),
    ],
)
async def test_the_dashboard_shows_the_ratio_of_a_real_balancer(
    balancer: ServiceProcess, lang: str, said: str
) -> None:
    """The status bar of a dashboard reading this balancer's own ``/status``."""
    for _ in range(3):
        await asyncio.to_thread(fetch, balancer.url + "/sized/50000", "gzip")
    status = await asyncio.to_thread(status_of, balancer)
    before, after = status["compression"]["bytes_in"], status["compression"]["bytes_out"]
    fixture = FixtureBalancer()
    fixture.answers["/status"] = status
    app = fixture_app(balancer=fixture, lang=lang)
    async with app.run_test(size=(120, 30)) as pilot:
        await loaded(pilot)
        label = app.query_one("#compression", Label)
        assert label.display
        assert str(label.content) == said.format(
            percent=round(100 * after / before),
            before=size(before),
            saved=size(before - after),
        )


@pytest.mark.parametrize(
    ("count", "text"),
    [(0, "0 B"), (999, "999 B"), (1000, "1.0 KB"), (150_500, "150.5 KB"), (3_400_000, "3.4 MB")],
)
def test_sizes_as_the_status_bar_writes_them(count: int, text: str) -> None:
    assert size(count) == text


async def test_the_dashboard_shows_nothing_while_compression_is_off() -> None:
    app = fixture_app()  # the fixtures' /status has compression off
    fixture_status = FixtureBalancer().answers["/status"]
    assert not fixture_status.get("compression", {}).get("encodings")
    async with app.run_test(size=(120, 30)) as pilot:
        await loaded(pilot)
        assert not app.query_one("#compression", Label).display


def test_the_connection_cap_counts_a_compressor_per_connection() -> None:
    off, on = BalancerConfig(), BalancerConfig(compress=("gzip",))
    assert bytes_per_connection(off) == STREAM_BYTES
    assert bytes_per_connection(on) == STREAM_BYTES + COMPRESSOR_BYTES
    gib = 1024**3
    cap = connection_cap(None, None, FDS_PER_CONNECTION, gib, bytes_per_connection(on))
    assert cap == gib // 2 // (1536 * 1024) == 341


def test_up_and_demo_pass_compress_to_their_balancer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TICSLAB_COMPRESS", raising=False)
    assert balancer_config().compress == ()
    assert balancer_config("--compress", "zstd,gzip").compress == ("zstd", "gzip")
    monkeypatch.setenv("TICSLAB_COMPRESS", "br")
    assert balancer_config().compress == ("br",)
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    assert up.options_from_args(parser.parse_args(["--compress", "gzip"])).compress == "gzip"


@pytest.mark.slow  # a whole ticslab up: ~4 s
def test_a_real_ticslab_up_compresses(tmp_path: Path) -> None:
    stack = UpStack(tmp_path, servers=1)
    stack.args += ["--compress", "gzip"]
    stack.start()
    try:
        with httpx.Client(base_url=stack.url, timeout=10) as client:
            for n in range(20):
                client.post("/tareas", json={"title": f"tarea {n} de la clase"}).raise_for_status()
            with client.stream("GET", "/tareas", headers={"accept-encoding": "gzip"}) as answer:
                raw = b"".join(answer.iter_raw())
            plain = client.get("/tareas", headers={"accept-encoding": "identity"}).content
            compression = client.get("/status").json()["compression"]
    finally:
        stack.close()
    assert answer.headers["content-encoding"] == "gzip"
    assert gunzip(raw) == plain
    assert compression["encodings"] == ["gzip"] and compression["answers"] == 1
