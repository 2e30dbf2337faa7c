"""A backend for bench/bench_streaming.py: large and slow answers, with nothing else to do.

``python -m uvicorn --app-dir bench stream_backend:app --port P``
- ``GET /health``: 200.
- ``GET /bytes/{n}``: ``n`` bytes in 256 KiB pieces, with a Content-Length.
- ``GET /drip/{pieces}``: headers at once, then one 1-byte piece a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

PIECE = b"x" * (256 * 1024)


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


async def many_bytes(request: Request) -> Response:
    size = int(request.path_params["n"])

    async def pieces() -> AsyncIterator[bytes]:
        left = size
        while left > 0:
            piece = PIECE if left >= len(PIECE) else PIECE[:left]
            left -= len(piece)
            yield piece

    headers = {"content-length": str(size)}
    return StreamingResponse(pieces(), media_type="application/octet-stream", headers=headers)


async def drip(request: Request) -> Response:
    count = int(request.path_params["pieces"])

    async def pieces() -> AsyncIterator[bytes]:
        for _ in range(count):
            await asyncio.sleep(1.0)
            yield b"*"

    return StreamingResponse(pieces(), media_type="text/plain")


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/bytes/{n:int}", many_bytes),
        Route("/drip/{pieces:int}", drip),
    ]
)
