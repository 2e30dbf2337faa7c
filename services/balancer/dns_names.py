"""Names for the servers ``--discover dns`` finds: A records carry no name, so each address is
named once, when it first appears, from its PTR record, and keeps that name while it stays.

- Swarm answers a task's PTR with its container name, ``STACK_SERVICE.SLOT.TASKID.NETWORK``:
  the server is ``SERVICE-SLOT`` (``server-2``), the slot ``docker service ps`` shows.
- Kubernetes answers a StatefulSet pod's with its hostname (``server-0.server.ns.svc...``): the
  first label as it is; a Deployment pod's with its address (``10-0-0-5.server.ns.svc...``):
  the base name before it (``server-10-0-0-5``).
- Without a PTR record, or with one that is no plain DNS label (a hostile answer: escapes,
  control or bidi characters, anything past ``SERVER_NAME_PATTERN``), the address is the name
  (``server-10-0-0-5``). A name another server already has is passed over for the next
  form (Swarm's ``server-2-k3x9q``, with the task id, then the address's), so two servers never
  share one. The dashboard and the log show these names: only safe identifiers pass.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Sequence

from services.common import SERVER_NAME_PATTERN

PLAIN_LABEL = re.compile(rb"[A-Za-z0-9_-]{1,63}")
SLOT = re.compile(rb"[0-9]{1,5}")
# The base is kept short, so the base and an IPv4 address fit in a name (32 characters).
BASE_LENGTH = 12
DEFAULT_BASE = "server"
TASK_ID_LENGTH = 5


def base_name(query: str) -> str:
    """The servers' common name from the name polled: ``tasks.server`` -> ``server``,
    ``server.ticslab.svc.cluster.local`` -> ``server``; ``server`` if it gives none."""
    labels = [label for label in query.lower().split(".") if label]
    if labels[:1] == ["tasks"] and len(labels) > 1:
        labels = labels[1:]
    first = labels[0][:BASE_LENGTH] if labels else ""
    return first if re.fullmatch(r"[a-z][a-z0-9_-]*", first) else DEFAULT_BASE


def address_name(base: str, address: str) -> str:
    """``base-10-0-0-5``; an IPv6 address too long for a name gives its digest instead."""
    name = f"{base}-{address.replace('.', '-').replace(':', '-')}"
    return name if re.fullmatch(SERVER_NAME_PATTERN, name) else digest_name(base, address)


def digest_name(base: str, address: str) -> str:
    """``base-`` and ten hex digits of the address's digest: short whatever the address."""
    return f"{base}-{hashlib.sha256(address.encode()).hexdigest()[:10]}"


def ptr_names(base: str, labels: Sequence[bytes]) -> list[str]:
    """The names a PTR target's ``labels`` give, best first (module docstring); none when they
    give no safe one."""
    labels = [label for label in labels if label]  # the root label is empty
    if not labels or not all(PLAIN_LABEL.fullmatch(label) for label in labels):
        return []
    first = labels[0].decode("ascii").lower()
    if len(labels) >= 3 and SLOT.fullmatch(labels[1]):  # Swarm: STACK_SERVICE.SLOT.TASKID...
        slot = f"{first.rsplit('_', 1)[-1]}-{labels[1].decode('ascii')}"
        # The task's id too, for the new task of a slot whose old one still drains
        # (``order: start-first``): ``server-2-k3x9q``, as ``docker service ps`` shows it.
        names = [slot, f"{slot}-{labels[2].decode('ascii').lower()[:TASK_ID_LENGTH]}"]
    elif first[0].isdigit():  # Kubernetes: a Deployment pod's 10-0-0-5.SERVICE...
        names = [f"{base}-{first}"]
    else:
        names = [first]
    return [name for name in names if re.fullmatch(SERVER_NAME_PATTERN, name)]


def server_name(
    base: str, address: str, ptr: Sequence[bytes] | None, taken: Collection[str]
) -> str | None:
    """The name for a new ``address``: its PTR's, else its own, else a digest of it, the first
    that no server in ``taken`` has; None if even that one is taken."""
    named = ptr_names(base, ptr) if ptr is not None else []
    for name in (*named, address_name(base, address), digest_name(base, address)):
        if name not in taken:
            return name
    return None
