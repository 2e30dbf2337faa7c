"""Scaling out and in while traffic runs: ``POST /control/servers`` and
``DELETE /control/servers/{name}``.

An added server is started by the driver (one more process of ``ticslab up``, or one more
container of the Compose service), then joins as NEW: no traffic until its first health check
passes (Envoy's ignore_new_hosts_until_first_hc), with ``--slow-start`` ramping it in. A
removed one is drained first (no new requests; those in flight finish, within
``DRAIN_SECONDS``), then stopped and removed by the driver, then forgotten. Both are
``discovery`` events (``added``, ``removed``), as when Docker discovery sees a container
come or go, so the timeline and the dashboard tell them the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import re

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from services.balancer.balancer import is_weight
from services.balancer.control import Control, _json_object, _who
from services.balancer.drivers import DriverFailure, DriverUnsupported
from services.balancer.routes import language_of
from services.balancer.server import DEFAULT_WEIGHT, Server
from services.common import DRAIN, MAX_SERVERS, MAX_WEIGHT, READY, SERVER_NAME_PATTERN
from services.waiting import wait_ready

# How long a removed server's requests in flight may take to finish before it is stopped
# anyway. HAProxy and Kubernetes wait for a grace period too (30 s there); 10 s keeps the
# whole removal (drain, then the driver's stop of up to 5 s) within the dashboard's wait for
# an answer (CONTROL_ACTION_SECONDS), and is long past any request of the lab's task API.
DRAIN_SECONDS = 10.0
DRAIN_POLL_SECONDS = 0.05
SCALE_FIELDS = frozenset({"name", "weight"})


async def drained(server: Server) -> int:
    """Wait (bounded) until ``server`` has no request in flight; how many are left. Also how
    ``--discover dns`` removes an address gone from DNS (dns_discovery.py)."""

    async def idle() -> str | None:
        return None if server.in_flight == 0 else f"{server.in_flight} in flight"

    await wait_ready(idle, DRAIN_SECONDS, DRAIN_POLL_SECONDS)
    return server.in_flight


def scaling_routes(control: Control) -> list[BaseRoute]:
    """The two routes, placed before ``control.routes()`` (its ``/control`` mount would
    otherwise answer them)."""
    scaling = Scaling(control)
    return [
        Route("/control/servers", scaling.add, methods=["POST"]),
        Route("/control/servers/{name}", scaling.remove, methods=["DELETE"]),
    ]


class Scaling:
    """Adds and removes servers through ``control``'s driver, one change at a time (so two
    removals at once never both see a second server left)."""

    def __init__(self, control: Control) -> None:
        self.control = control
        self.balancer = control.balancer
        self._lock = asyncio.Lock()

    async def add(self, request: Request) -> Response:
        """``{"name"?: str, "weight"?: int}`` -> 201 with the new server's name, URL, state."""
        control = self.control
        if refusal := control._refusal(request):
            return refusal
        body = await _json_object(request, language_of(request, self.balancer))
        if body is None or not body.keys() <= SCALE_FIELDS:
            fields = ", ".join(sorted(SCALE_FIELDS))
            return control._error(request, 400, "bad_scale_body", fields=fields)
        name, weight = body.get("name"), body.get("weight", DEFAULT_WEIGHT)
        if name is not None and not (
            isinstance(name, str) and re.fullmatch(SERVER_NAME_PATTERN, name)
        ):
            return control._error(request, 400, "bad_server_name")
        if not is_weight(weight):
            return control._error(request, 400, "bad_weight", maximum=MAX_WEIGHT)
        return await control._to_the_end(self._add(request, name, weight))

    async def _add(self, request: Request, name: str | None, weight: int) -> Response:
        control, balancer = self.control, self.balancer
        async with self._lock:
            count = len(balancer.servers)
            if count >= MAX_SERVERS:
                return control._error(
                    request, 409, "too_many_servers", count=count, maximum=MAX_SERVERS
                )
            if name is not None and name in balancer.states():
                return control._error(request, 409, "server_exists", server=name)
            try:
                done = await control.driver.scale_out(name)
            except (DriverUnsupported, DriverFailure) as error:
                return self._driver_error(request, name, "add", error)
            server = self._join(done["server"], done["url"], _who(request), weight)
        answer = {**done, "state": server.state, "weight": server.weight}
        return JSONResponse(answer, status_code=201)

    def _join(self, name: str, url: str, who: str | None, weight: int) -> Server:
        """Put the started server in the balancer as NEW; Docker discovery may have seen its
        container first (same name), and it is then the same server, never a second one."""
        try:
            return self.balancer.add_server(name, url, who=who, weight=weight)
        except ValueError:
            server = self.balancer.get(name)
            self.balancer.set_weight(name, weight, who=who)
            return server

    async def remove(self, request: Request) -> Response:
        """Drain, stop and forget ``name``: 200 once it is gone."""
        if refusal := self.control._refusal(request):
            return refusal
        name = request.path_params["name"]
        return await self.control._to_the_end(self._remove(request, name))

    async def _remove(self, request: Request, name: str) -> Response:
        control, balancer = self.control, self.balancer
        async with self._lock:
            if unknown := control._unknown_server(request, name):
                return unknown
            if len(balancer.servers) <= 1:
                return control._error(request, 409, "last_server", server=name)
            server = balancer.get(name)
            previous = server.state
            balancer.set_admin_state(name, DRAIN, who=_who(request))
            left = await drained(server)
            try:
                done = await control.driver.scale_in(name)
            except (DriverUnsupported, DriverFailure) as error:
                if previous != DRAIN:  # it stays: back to where it was (its checks decide)
                    balancer.set_admin_state(name, READY, who=_who(request))
                return self._driver_error(request, name, "remove", error)
            with contextlib.suppress(KeyError):  # discovery saw its container go first
                balancer.remove_server(name, who=_who(request))
        answer = {
            "server": name,
            "action": "remove",
            **done,
            "drained": left == 0,
            "in_flight_left": left,
            "servers": list(balancer.states()),
        }
        return JSONResponse(answer)

    def _driver_error(
        self, request: Request, name: str | None, action: str, error: Exception
    ) -> Response:
        """409 when the driver cannot (or refuses), 502 when it failed; on the timeline too."""
        control = self.control
        control._event(request, name, action, result=str(error), ok=False)
        unsupported = isinstance(error, DriverUnsupported)
        status, code = (409, "driver_unsupported") if unsupported else (502, "driver_failed")
        return control._error(request, status, code, driver=control.driver.name, detail=str(error))
