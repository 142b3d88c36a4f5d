"""What Linux's /proc says about a process: its memory (``VmRSS``, ``VmHWM``) and CPU time."""

from __future__ import annotations

import os

from .errors import ProcessExited

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_status_kb(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/PID/status (``VmRSS``, ``VmHWM``), in KiB. A process that has
    exited but is not reaped yet has no memory fields: ``ProcessExited``."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise ProcessExited(f"/proc/{pid}/status has no {key}")


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    # the command name (field 2) may hold spaces: split after its closing parenthesis
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK
