"""Compression at the edge (``--compress``): an ASGI layer around the proxy.

The encoding is chosen from the request's ``Accept-Encoding`` (its q-values, then the order
the balancer offers them in), and the answer is compressed piece by piece as the proxy sends
it: every piece is flushed, so a slow answer's bytes reach the client as they come and a
stream holds no more than the compressor's window (set small below), never the whole answer.

What is left alone, as nginx and HAProxy leave it: answers under ``MIN_BYTES`` (by their
``Content-Length``; without one, by the first piece when it is the whole answer: a stream of
unknown size is compressed, as nginx does), types that do not shrink (only JSON, text, JS, CSS,
SVG are compressed), answers already encoded, ranges, 204/304, HEAD and
``Cache-Control: no-transform``. Every answer that could be compressed says
``Vary: Accept-Encoding``; a compressed one loses ``Content-Length`` (it is chunked) and its
``ETag`` becomes weak (the bytes differ, the meaning does not: RFC 9110 section 8.8.1).
"""

from __future__ import annotations

import re
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import brotli  # type: ignore[import-untyped]  # no hints; brotli-stubs lacks flush()
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if sys.version_info >= (3, 14):
    from compression import zstd
else:  # the backport of the same module, so one code path (docs/design/dependencies.md)
    from backports import zstd

ENCODINGS = ("br", "zstd", "gzip")  # what --compress may offer, in its default order
MIN_BYTES = 1024  # smaller answers go as they are: the headers cost more than is saved
# Levels chosen by bench/bench_compress.py (docs/benchmarks.md): fast enough for every answer.
GZIP_LEVEL, BROTLI_QUALITY, ZSTD_LEVEL = 6, 4, 3
# Each compressor's window, 2**WINDOW_BITS bytes, and zstd's match tables: what one stream
# holds besides the proxy's buffers. Brotli's and zstd's defaults hold 4 and 2 MiB per stream;
# 64 KiB windows cost the lab's answers under 1 % of their ratio (bench/bench_compress.py).
WINDOW_BITS = 16
WINDOW_BITS_GZIP = 15  # deflate's largest window is 32 KiB
ZSTD_TABLE_BITS = 14
# The most one stream's compressor holds (measured, rounded up: brotli's, ~0.8 MiB), which
# the edge adds to what a connection may hold when it sizes its connection cap (edge.py).
COMPRESSOR_BYTES = 1024 * 1024
# A hostile Accept-Encoding costs bounded work: a longer one is ignored (no compression),
# entries past MAX_ACCEPT_ENTRIES are not read.
MAX_ACCEPT_BYTES = 1024
MAX_ACCEPT_ENTRIES = 16
COMPRESSIBLE = frozenset(
    {
        "application/json",
        "application/javascript",
        "application/ecmascript",
        "application/xml",
        "image/svg+xml",
    }
)
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")  # RFC 9110 section 5.6.2, lowercased
QVALUE = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")  # RFC 9110 section 12.4.2
ALIASES = {"x-gzip": "gzip"}  # RFC 9110 section 8.4.1.3


def parse_encodings(text: str) -> tuple[str, ...]:
    """``--compress``'s value: ``off``, or encodings from ``ENCODINGS`` separated by commas,
    in the order preferred when the client likes several as much."""
    if text.strip().lower() == "off":
        return ()
    names = [part.strip().lower() for part in text.split(",")]
    if not names or any(name not in ENCODINGS for name in names) or len(set(names)) < len(names):
        raise ValueError(
            f"expected 'off' or some of {','.join(ENCODINGS)} separated by commas, "
            f"each once; got {text!r}"
        )
    return tuple(names)


def accepted_codings(value: str) -> dict[str, float]:
    """Each coding ``Accept-Encoding`` names (lowercased, ``*`` included) and its q-value.
    Entries that are not well formed are skipped; nothing here raises."""
    codings: dict[str, float] = {}
    if len(value) > MAX_ACCEPT_BYTES:
        return codings
    for entry in value.split(",", MAX_ACCEPT_ENTRIES)[:MAX_ACCEPT_ENTRIES]:
        name, _, params = entry.partition(";")
        name = name.strip().lower()
        quality = weight(params)
        if TOKEN.fullmatch(name) and quality is not None:
            codings.setdefault(ALIASES.get(name, name), quality)
    return codings


def weight(params: str) -> float | None:
    """The q-value of an entry's parameters (1 when there are none), None when malformed."""
    params = params.strip()
    if not params:
        return 1.0
    key, _, value = params.partition("=")
    value = value.strip()
    if key.strip().lower() != "q" or not QVALUE.fullmatch(value):
        return None
    return float(value)


@dataclass(frozen=True)
class Choice:
    """What to send: ``encoding`` (None: as it is), and whether the client refused
    ``identity`` (then even small answers are compressed)."""

    encoding: str | None
    identity_refused: bool = False


def choose(header: str | None, offered: tuple[str, ...]) -> Choice:
    """The offered encoding the client values most (ties: ``offered``'s order); a coding not
    named gets the q-value of ``*``. No header: as it is (what browsers and nginx assume)."""
    if header is None:
        return Choice(None)
    codings = accepted_codings(header)
    anything = codings.get("*", 0.0)
    best, best_q = None, 0.0
    for name in offered:
        quality = codings.get(name, anything)
        if quality > best_q:
            best, best_q = name, quality
    identity = codings.get("identity", anything if "*" in codings else 1.0)
    return Choice(best, identity == 0.0)


class Compressor(Protocol):
    def piece(self, data: bytes) -> bytes:
        """``data`` compressed and flushed: the client can decode all of it now."""

    def last(self, data: bytes) -> bytes:
        """``data`` compressed and the stream's end."""


class Gzip:
    def __init__(self, level: int = GZIP_LEVEL) -> None:
        self._z = zlib.compressobj(level, zlib.DEFLATED, 16 + WINDOW_BITS_GZIP)

    def piece(self, data: bytes) -> bytes:
        return self._z.compress(data) + self._z.flush(zlib.Z_SYNC_FLUSH)

    def last(self, data: bytes) -> bytes:
        return self._z.compress(data) + self._z.flush(zlib.Z_FINISH)


class Brotli:
    def __init__(self, level: int = BROTLI_QUALITY) -> None:
        self._b = brotli.Compressor(mode=brotli.MODE_TEXT, quality=level, lgwin=WINDOW_BITS)

    def piece(self, data: bytes) -> bytes:
        out: bytes = self._b.process(data) + self._b.flush()
        return out

    def last(self, data: bytes) -> bytes:
        out: bytes = self._b.process(data) + self._b.finish()
        return out


class Zstd:
    def __init__(self, level: int = ZSTD_LEVEL) -> None:
        parameter = zstd.CompressionParameter
        options = {
            int(parameter.compression_level): level,
            int(parameter.window_log): WINDOW_BITS,
            int(parameter.hash_log): ZSTD_TABLE_BITS,
            int(parameter.chain_log): ZSTD_TABLE_BITS,
        }
        self._z = zstd.ZstdCompressor(options=options)

    def piece(self, data: bytes) -> bytes:
        return self._z.compress(data, mode=zstd.ZstdCompressor.FLUSH_BLOCK)

    def last(self, data: bytes) -> bytes:
        return self._z.compress(data, mode=zstd.ZstdCompressor.FLUSH_FRAME)


# Each made at its default level for an answer; bench/bench_compress.py passes other levels.
COMPRESSORS: dict[str, Callable[..., Compressor]] = {"gzip": Gzip, "br": Brotli, "zstd": Zstd}


@dataclass
class Counts:
    """Answers compressed with one encoding, and their bytes before and after."""

    answers: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


@dataclass
class CompressionStats:
    """What ``/status`` shows under ``compression`` (docs/api.md)."""

    encodings: tuple[str, ...] = ()
    by_encoding: dict[str, Counts] = field(default_factory=dict)

    def reset(self) -> None:
        """Zeroed with the balancer's other counters (a stream under way counts on apart)."""
        self.by_encoding = {}

    def count(self, encoding: str) -> Counts:
        return self.by_encoding.setdefault(encoding, Counts())

    def snapshot(self) -> dict[str, Any]:
        total_in = sum(c.bytes_in for c in self.by_encoding.values())
        total_out = sum(c.bytes_out for c in self.by_encoding.values())
        return {
            "encodings": list(self.encodings),
            "min_bytes": MIN_BYTES,
            "answers": sum(c.answers for c in self.by_encoding.values()),
            "bytes_in": total_in,
            "bytes_out": total_out,
            "ratio": round(total_out / total_in, 4) if total_in else None,
            "by_encoding": {
                name: vars(counts).copy() for name, counts in sorted(self.by_encoding.items())
            },
        }


def media_type(value: bytes) -> str:
    return value.split(b";", 1)[0].strip().lower().decode("latin-1")


def compressible(content_type: bytes | None) -> bool:
    if content_type is None:
        return False
    kind = media_type(content_type)
    return kind.startswith("text/") or kind in COMPRESSIBLE or kind.endswith("+json")


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first ``name`` header's value (names are lowercase in ASGI)."""
    return next((value for key, value in headers if key == name), None)


def may_compress(status: int, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether an answer of ``status`` and ``headers`` is one to compress at all."""
    if not 200 <= status < 300 or status in (204, 206):
        return False
    if header(headers, b"content-encoding") is not None:
        return False
    if header(headers, b"content-range") is not None:
        return False
    if b"no-transform" in (header(headers, b"cache-control") or b"").lower():
        return False
    return compressible(header(headers, b"content-type"))


def with_vary(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` saying the answer depends on ``Accept-Encoding`` (once)."""
    vary = b",".join(value for key, value in headers if key == b"vary").lower()
    names = {part.strip() for part in vary.split(b",")}
    if b"*" in names or b"accept-encoding" in names:
        return headers
    return [*headers, (b"vary", b"Accept-Encoding")]


def encoded_headers(headers: list[tuple[bytes, bytes]], encoding: str) -> list[tuple[bytes, bytes]]:
    """The headers of the compressed answer: no length, the encoding named, the ETag weak."""
    result: list[tuple[bytes, bytes]] = []
    for key, value in headers:
        if key == b"content-length":
            continue
        if key == b"etag" and not value.startswith(b"W/"):
            value = b"W/" + value
        result.append((key, value))
    result.append((b"content-encoding", encoding.encode()))
    return result


class CompressedAnswer:
    """One answer on its way out: decides at its head (or first piece) whether to compress,
    then compresses each piece as it passes."""

    def __init__(self, send: Send, choice: Choice, stats: CompressionStats) -> None:
        self._send = send
        self._choice = choice
        self._stats = stats
        self._held: Message | None = None  # a head waiting for the first piece
        self._compressor: Compressor | None = None
        self._counts = Counts()

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            await self._start(message)
        elif message["type"] == "http.response.body" and self._held is not None:
            await self._decide_on_first_piece(message)
        elif message["type"] == "http.response.body" and self._compressor is not None:
            await self._piece(message)
        else:
            await self._send(message)

    async def _start(self, message: Message) -> None:
        headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
        if not may_compress(message["status"], headers):
            await self._send(message)
            return
        headers = with_vary(headers)
        message = {**message, "headers": headers}
        length = header(headers, b"content-length")
        if self._choice.encoding is None or (length is not None and self._small(length)):
            await self._send(message)
        elif length is None:
            self._held = message
        else:
            await self._begin(message)

    def _small(self, length: bytes) -> bool:
        """Under ``MIN_BYTES`` (a client that refused identity gets even those compressed)."""
        if self._choice.identity_refused:
            return False
        try:
            return int(length) < MIN_BYTES
        except ValueError:
            return True  # never from the proxy, which checks it: leave it as it came

    async def _decide_on_first_piece(self, message: Message) -> None:
        head, self._held = self._held, None
        assert head is not None
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False) and self._small(b"%d" % len(body)):
            await self._send(head)
            await self._send(message)
            return
        await self._begin(head)
        await self._piece(message)

    async def _begin(self, head: Message) -> None:
        encoding = self._choice.encoding
        assert encoding is not None
        self._compressor = COMPRESSORS[encoding]()
        self._counts = self._stats.count(encoding)
        self._counts.answers += 1
        await self._send({**head, "headers": encoded_headers(head["headers"], encoding)})

    async def _piece(self, message: Message) -> None:
        assert self._compressor is not None
        body: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        out = self._compressor.piece(body) if more else self._compressor.last(body)
        self._counts.bytes_in += len(body)
        self._counts.bytes_out += len(out)
        if out or not more:
            await self._send({"type": "http.response.body", "body": out, "more_body": more})


class Compression:
    """The ASGI layer: the app's answers compressed as the request's client accepts."""

    def __init__(self, app: ASGIApp, stats: CompressionStats) -> None:
        self.app = app
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "HEAD":
            await self.app(scope, receive, send)
            return
        values = [value for key, value in scope["headers"] if key == b"accept-encoding"]
        asked = b",".join(values).decode("latin-1") if values else None
        choice = choose(asked, self.stats.encodings)
        await self.app(scope, receive, CompressedAnswer(send, choice, self.stats))


def compressing(app: ASGIApp, stats: CompressionStats) -> ASGIApp:
    """``app`` behind the layer when ``--compress`` offers any encoding, else as it is."""
    return Compression(app, stats) if stats.encodings else app
