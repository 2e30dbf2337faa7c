"""What ``--compress`` saves and costs: ``python bench/bench_compress.py``.

For each encoding and level, on the lab's own answer (``GET /tareas`` of a real task server
holding 1,000 tasks created through its API) and on a text file (docs/api.md):
- the ratio (bytes out / bytes in) compressed at once, as the balancer compresses an answer
  it held whole (every answer of the lab's), and in 32 KiB pieces each flushed, as it
  compresses a stream (``STREAM_PIECE``);
- the CPU it takes per MB of input (process time, best of ``ROUNDS``);
- at the balancer's levels, the memory one stream's compressor holds (RSS growth of
  ``STREAMS`` compressors fed 8 flushed pieces each, per compressor), against
  ``COMPRESSOR_BYTES``, which the edge counts per connection.
Then the same task list fetched through a real balancer started with ``--compress``, to show
the bytes a client receives. The compressors are the balancer's own
(services/balancer/compression.py). Traffic only to 127.0.0.1; every loop is bounded.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from stack import start_balancer, start_taskserver

from services.balancer.compression import COMPRESSOR_BYTES, COMPRESSORS, ENCODINGS, Compressor
from services.balancer.proxy import STREAM_PIECE

ROOT = Path(__file__).resolve().parent.parent
TASKS = 1_000
ROUNDS = 5
STREAMS = 100
LEVELS = {"gzip": (1, 6, 9), "br": (1, 4, 6, 11), "zstd": (1, 3, 9, 19)}
DEFAULTS = {"gzip": 6, "br": 4, "zstd": 3}  # the balancer's (GZIP_LEVEL, ...)


def task_list() -> bytes:
    """``GET /tareas`` of a real task server after ``TASKS`` creates through its API."""
    with tempfile.TemporaryDirectory() as folder:
        server = start_taskserver("server1", Path(folder) / "tasks.json")
        try:
            with httpx.Client(base_url=server.url, timeout=10) as client:
                for n in range(TASKS):
                    body = {"title": f"Tarea {n}: revisar el informe de la semana {n % 52}"}
                    client.post("/tareas", json=body).raise_for_status()
                return client.get("/tareas").content
        finally:
            server.close()


def compress(encoding: str, level: int, data: bytes, piece: int | None) -> bytes:
    """``data`` compressed at once (``piece`` None) or in flushed pieces of ``piece``."""
    compressor: Compressor = COMPRESSORS[encoding](level)
    if piece is None:
        return compressor.last(data)
    parts = [compressor.piece(data[i : i + piece]) for i in range(0, len(data), piece)]
    return b"".join(parts) + compressor.last(b"")


def cpu_ms_per_mb(encoding: str, level: int, data: bytes) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.process_time()
        compress(encoding, level, data, None)
        best = min(best, time.process_time() - started)
    return 1000 * best / (len(data) / 1e6)


def table(name: str, data: bytes) -> None:
    print(f"\n{name}: {len(data):,} bytes")
    print("| encoding | level | ratio (whole) | ratio (32 KiB pieces) | CPU ms per MB |")
    print("|---|---|---|---|---|")
    for encoding in ENCODINGS:
        for level in LEVELS[encoding]:
            whole = len(compress(encoding, level, data, None)) / len(data)
            pieces = len(compress(encoding, level, data, STREAM_PIECE)) / len(data)
            cost = cpu_ms_per_mb(encoding, level, data)
            mark = " (default)" if level == DEFAULTS[encoding] else ""
            print(f"| {encoding} | {level}{mark} | {whole:.3f} | {pieces:.3f} | {cost:.1f} |")


def memory_per_stream(data: bytes) -> None:
    """Each encoding in a process of its own: memory one freed is not counted for another."""
    print(f"\nmemory per stream (what the edge counts: {COMPRESSOR_BYTES // 1024} KiB):")
    for encoding in ENCODINGS:
        done = subprocess.run(
            [sys.executable, __file__, "--memory", encoding],
            input=data,
            capture_output=True,
            timeout=120,
            check=True,
        )
        print(f"  {encoding:5} {done.stdout.decode().strip()} KiB")


def stream_memory(encoding: str, data: bytes) -> float:
    """KiB of RSS each of ``STREAMS`` compressors of ``encoding`` holds after 8 pieces."""
    process = psutil.Process()
    gc.collect()
    before = process.memory_info().rss
    streams = [COMPRESSORS[encoding]() for _ in range(STREAMS)]
    for stream in streams:
        for i in range(8):
            stream.piece(data[i * STREAM_PIECE : (i + 1) * STREAM_PIECE])
    return (process.memory_info().rss - before) / STREAMS / 1024


def through_the_balancer() -> None:
    """The task list as a client gets it from ``ticslab balancer --compress br,zstd,gzip``."""
    with tempfile.TemporaryDirectory() as folder:
        server = start_taskserver("server1", Path(folder) / "tasks.json")
        balancer = start_balancer([server.port], ("--compress", "br,zstd,gzip"))
        try:
            with httpx.Client(base_url=balancer.url, timeout=10) as client:
                for n in range(TASKS):
                    body = {"title": f"Tarea {n}: revisar el informe de la semana {n % 52}"}
                    client.post("/tareas", json=body).raise_for_status()
                print("\nthrough the balancer (GET /tareas, 1,000 tasks):")
                for accept in ("identity", "gzip", "br", "zstd"):
                    headers = {"accept-encoding": accept}
                    with client.stream("GET", "/tareas", headers=headers) as response:
                        size = sum(len(raw) for raw in response.iter_raw())
                    print(f"  Accept-Encoding: {accept:8} -> {size:,} bytes")
                print(f"  /status compression: {client.get('/status').json()['compression']}")
        finally:
            balancer.close()
            server.close()


def main() -> int:
    if sys.argv[1:2] == ["--memory"]:
        print(f"{stream_memory(sys.argv[2], sys.stdin.buffer.read()):.0f}")
        return 0
    tasks = task_list()
    table(f"GET /tareas with {TASKS:,} tasks", tasks)
    table("docs/api.md", (ROOT / "docs" / "api.md").read_bytes())
    memory_per_stream(tasks)
    through_the_balancer()
    return 0


if __name__ == "__main__":
    sys.exit(main())
