"""services/binding.py: the one "can this port be bound" that ``ticslab up``, the experiments
and ``ticslab dashboard --web`` share, tried against real sockets."""

from __future__ import annotations

import socket

from support import free_port

from services.binding import bind_error
from services.launcher.ports import port_is_free, taken_ports


def test_a_listened_port_is_taken_an_unknown_host_does_not_resolve_a_free_port_is_free() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert isinstance(bind_error("127.0.0.1", port), OSError)
        assert not port_is_free(port)
        assert taken_ports([port]) == [port]
    assert isinstance(bind_error("no-such-host.invalid", 8000), socket.gaierror)
    free = free_port()
    assert bind_error("127.0.0.1", free) is None
    assert port_is_free(free)
