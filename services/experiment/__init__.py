"""``ticslab experiment``: the handout's claims measured on throwaway stacks.

Each scenario starts its own stack on free ports with its own data folder and token, sends a
bounded workload through it, and returns a ``Result``: the numbers and, for each claim of the
handout, whether the numbers bear it out. ``cli`` prints it and writes ``--json`` / ``--html``.
"""
