"""File descriptors: every virtual device holds one (its socket), two with ``--disk`` (its part
file while it downloads). A process may open ``RLIMIT_NOFILE``'s soft limit; it may raise that
to the hard limit itself, which is done here before any device starts. Beyond the hard limit
the simulation is refused before it starts, with what to change, rather than failing devices
one by one with ``EMFILE`` once running."""

from __future__ import annotations

import math
import resource

from .errors import SimulationError

#: descriptors a worker process needs besides its devices (interpreter, pipes, selector, logs)
OVERHEAD = 64


def raise_soft_limit() -> int:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit; the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft


def descriptors_needed(devices: int, *, disk: bool) -> int:
    return devices * (2 if disk else 1) + OVERHEAD


def check_per_process(devices: int, processes: int, *, disk: bool, limit: int) -> None:
    """Refuse ``devices`` over ``processes`` when one process would need more descriptors than
    ``limit``, naming the limit and what would fit."""
    per = math.ceil(devices / processes)
    need = descriptors_needed(per, disk=disk)
    if need <= limit:
        return
    fits = max(1, (limit - OVERHEAD) // (2 if disk else 1))
    at_least = math.ceil(devices / fits)
    what = "a socket and a part file" if disk else "a socket"
    raise SimulationError(
        f"{devices} devices over {processes} processes is {per} devices per process; each "
        f"holds {what}, about {need} file descriptors per process, and this machine allows "
        f"{limit} (RLIMIT_NOFILE, `ulimit -Hn`). Use --processes {at_least} or more, or raise "
        "the hard limit (limits.conf, systemd LimitNOFILE)"
    )
