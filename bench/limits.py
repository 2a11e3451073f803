"""Raise this process's open-file limit: 10,000+ sockets per side need more than the usual 1,024."""

import resource


def raise_nofile() -> int:
    """Set the soft RLIMIT_NOFILE to the hard limit and return it. Child processes inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1_048_576
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard
