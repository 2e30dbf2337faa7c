"""A slowloris against one task server: ``python bench/bench_slowloris.py [--connections 1100]``.

Issue 23, item 18: connections that send one header line every 5 s and never finish their
header section. Every 5 s it prints how many the server still holds open and how a
``/health`` probe fares. With the guarded protocol (services/protocol.py) every one is
answered 408 and closed within ``--request-timeout`` (10 s) plus one line's pause; before it,
uvicorn held them all for as long as they went on. Loopback only; 25 s in all.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from stack import report, start_taskserver

from services.common import raise_fd_limit

LINE_EVERY = 5.0  # seconds between two header lines of one slow client
LINES = 6  # then it gives up: the run is bounded


async def slow_client(port: int, holding: list[int]) -> None:
    """One connection that sends a header line every ``LINE_EVERY`` s until it is answered."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    holding[0] += 1
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        for _ in range(LINES):
            writer.write(b"X-Slow: y\r\n")
            await writer.drain()
            try:
                if await asyncio.wait_for(reader.read(1), LINE_EVERY) or reader.at_eof():
                    return  # answered (408) or closed
            except TimeoutError:
                pass
    except OSError:
        return
    finally:
        holding[0] -= 1
        writer.close()


async def probe(port: int) -> str:
    """``/health``'s status and time, or why it failed (2 s at most)."""
    started = time.perf_counter()
    try:
        connected = asyncio.open_connection("127.0.0.1", port)
        reader, writer = await asyncio.wait_for(connected, 2)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        line = await asyncio.wait_for(reader.readline(), 2)
        writer.close()
    except (OSError, TimeoutError) as error:
        return type(error).__name__
    return f"{line.split(b' ')[1].decode()} in {time.perf_counter() - started:.3f} s"


async def attack(port: int, connections: int) -> int:
    """The most connections still held 15 s in (after the 10 s request timeout)."""
    holding = [0]
    clients = [asyncio.create_task(slow_client(port, holding)) for _ in range(connections)]
    started, held_late = time.monotonic(), 0
    for _ in range(5):
        await asyncio.sleep(LINE_EVERY)
        elapsed = time.monotonic() - started
        print(f"{elapsed:4.0f} s: {holding[0]:5d} held open, /health {await probe(port)}")
        if elapsed >= 15:
            held_late = max(held_late, holding[0])
    for client in clients:
        client.cancel()
    await asyncio.gather(*clients, return_exceptions=True)
    return held_late


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1100)
    args = parser.parse_args()
    raise_fd_limit()  # the clients' own sockets
    with tempfile.TemporaryDirectory() as folder:
        server = start_taskserver("server1", Path(folder) / "tasks.json")
        try:
            held = asyncio.run(attack(server.port, args.connections))
        finally:
            server.close()
    return report([(f"no slow connection held after 15 s ({held} were)", held == 0)])


if __name__ == "__main__":
    raise SystemExit(main())
