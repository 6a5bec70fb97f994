"""The open-file limit of a child process: raised towards what its
connections need, within the hard limit the process was started with."""
from __future__ import annotations

import logging

log = logging.getLogger("prack.loop")


def raise_fd_limit(wanted: int) -> int:
    """Lift this process's soft limit on open files towards `wanted` (never
    past the hard limit, which only a privileged process may raise) and
    return the soft limit now in force, or `wanted` when there is no limit
    or it cannot be read. The caller fits itself to what is returned; past
    it, accept() reports EMFILE."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, ValueError, OSError) as exc:
        log.debug("could not read the open-file limit: %s", exc)
        return wanted
    infinity = resource.RLIM_INFINITY
    if hard != infinity:
        wanted = min(wanted, hard)
    if soft == infinity:
        return wanted
    if soft >= wanted:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError) as exc:
        log.debug("could not raise the open-file limit: %s", exc)
        return soft
    return wanted
