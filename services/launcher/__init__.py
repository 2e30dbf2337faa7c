"""``ticslab up`` and ``ticslab demo``: the whole stack as local processes, no Docker needed."""
