"""What stops a simulation: bad input, limits of this machine, a broker that refuses the fleet."""

from __future__ import annotations

from ..errors import CommandError


class SimulationError(CommandError):
    """A simulation cannot run, or cannot go on (the message says why and what to change)."""
