"""A server's states, and how the dashboard draws each: the one table the server table, the
events panel and the control keys read.

The names are the balancer's (``SERVER_STATES``, services/common.py): the dashboard does not
import the balancer. Plain data, no Textual.
"""

from __future__ import annotations

from services.common import DOWN, DRAIN, EJECTED, MAINT, NEW, UP

# The state as a word on its colour in the server table, so it reads without colour too.
STATE_STYLES = {
    UP: "bold black on green3",
    DOWN: "bold white on red3",
    DRAIN: "bold black on yellow3",
    MAINT: "bold black on cyan3",
    EJECTED: "bold white on dark_orange3",
    NEW: "bold black on grey70",
}
UNKNOWN_STYLE = "bold reverse"  # a state a newer balancer may send
# A server going DOWN or UP in the events panel: the colour of its state, as text.
EVENT_STYLES = {DOWN: "bold red", UP: "bold green"}
# Out of the rotation by hand or ejected: ``d`` brings these back (READY also ends an ejection
# early: the way back for a server ejected by mistake) and drains any other.
SET_ASIDE = (DRAIN, MAINT, EJECTED)
