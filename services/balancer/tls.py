"""TLS termination at the balancer: an HTTPS listener beside the HTTP one, serving the same
app with the same guarded protocol, while the servers behind stay plain HTTP (the lesson:
the handshake ends here). ``--redirect-http`` makes the HTTP port answer 308 to HTTPS.

The certificate is the user's (``--tls-cert``/``--tls-key``) or the local CA's
(services/balancer/certificates.py); either is ready, or refused in one line, before the
balancer starts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from services.balancer.certificates import (
    CertificateError,
    TlsFiles,
    checked_user_files,
    local_files,
)
from services.balancer.config import BalancerConfig
from services.common import default_tls_dir, printable
from services.web import asked_language, json_error

# Answered over plain HTTP even with --redirect-http, as HAProxy users exempt their health
# checks: probes (ticslab up's, Docker's, a load balancer's in front) speak HTTP.
KEPT_ON_HTTP = frozenset({"/health"})
HOST_NAME = re.compile(r"[A-Za-z0-9.-]{1,253}")
HOST_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]{2,45}\]")
HTTPS_PORT = 443


def tls_files(config: BalancerConfig) -> TlsFiles | None:
    """What the HTTPS listener serves, made or checked now; None when TLS is off."""
    if (config.tls_cert is None) != (config.tls_key is None):
        raise CertificateError("--tls-cert and --tls-key go together: give both, or neither")
    if config.redirect_http and not config.tls_enabled:
        raise CertificateError("--redirect-http needs TLS: add --tls (or --tls-cert/--tls-key)")
    if not config.tls_enabled:
        return None
    if config.tls_cert is not None and config.tls_key is not None:
        return checked_user_files(Path(config.tls_cert), Path(config.tls_key))
    folder = Path(config.tls_dir) if config.tls_dir else default_tls_dir()
    try:
        return local_files(folder)
    except OSError as error:
        raise CertificateError(
            f"cannot make the local CA in {folder}: {error.strerror or error} "
            "(choose another folder with --tls-dir)"
        ) from None


def https_listener(app: ASGIApp, config: BalancerConfig, files: TlsFiles) -> dict[str, Any]:
    """The uvicorn settings of the HTTPS listener (services/web.py ``serve``'s ``also``)."""
    return {
        "app": app,
        "port": config.tls_port,
        "ssl_certfile": str(files.cert),
        "ssl_keyfile": str(files.key),
    }


def https_location(scope: Scope, tls_port: int) -> str | None:
    """Where the request of ``scope`` is on HTTPS: its one ``Host``'s name, the TLS port,
    the path and query as sent; None when the Host is missing, repeated or not a plain name
    or address (a Location is never built from arbitrary bytes)."""
    hosts = [value for name, value in scope["headers"] if name == b"host"]
    if len(hosts) != 1:
        return None
    text = hosts[0].decode("latin-1")
    name = text[: text.index("]") + 1] if text.startswith("[") else text.partition(":")[0]
    if not (HOST_NAME.fullmatch(name) or HOST_IPV6.fullmatch(name)):
        return None
    port = "" if tls_port == HTTPS_PORT else f":{tls_port}"
    path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    query = scope.get("query_string", b"").decode("latin-1")
    return f"https://{name}{port}{path}" + (f"?{query}" if query else "")


class RedirectToHttps:
    """The HTTP port with ``--redirect-http``: 308 (method and body kept, unlike 301/302) to
    the same URL on HTTPS, for every path but ``KEPT_ON_HTTP``; lifespan passes through."""

    def __init__(self, app: ASGIApp, tls_port: int, lang: str) -> None:
        self.app = app
        self.tls_port = tls_port
        self.lang = lang

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in KEPT_ON_HTTP:
            await self.app(scope, receive, send)
            return
        location = https_location(scope, self.tls_port)
        if location is None:
            headers = Headers(scope=scope)
            lang = asked_language(headers, self.lang)
            host = printable(headers.get("host", ""))
            answer = json_error(400, code="redirect_bad_host", lang=lang, host=host)
            await answer(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 308,
                "headers": [(b"location", location.encode("latin-1")), (b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})
