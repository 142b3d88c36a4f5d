"""How many rejections the edge reports one by one: a flood of bad messages must not become a
flood of log lines, telemetry events (each one a row in the on-disk outbox and a publish) and
state messages.

Per reason, the first ``burst`` rejections are reported, then one per ``interval`` seconds; the
rest are only counted (the agent's ``rejections`` counter and the state's ``rejections`` field
always count every one), and how many went unreported is said by the next report of that reason,
or by a summary once the flood is over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_BURST = 20
DEFAULT_INTERVAL_S = 1.0
#: Reasons are short stable codes; more than this many distinct ones is itself an anomaly.
MAX_REASONS = 64


@dataclass
class _Budget:
    tokens: float
    stamp: float
    unreported: int = 0


class RejectionThrottle:
    def __init__(
        self,
        clock: Callable[[], float],
        *,
        burst: int = DEFAULT_BURST,
        interval: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self._clock = clock
        self._burst = float(burst)
        self._interval = interval
        self._budgets: dict[str, _Budget] = {}

    def _budget(self, reason: str) -> _Budget:
        now = self._clock()
        budget = self._budgets.get(reason)
        if budget is None:
            if len(self._budgets) >= MAX_REASONS:
                reason = "other"
                budget = self._budgets.get(reason)
            if budget is None:
                budget = self._budgets[reason] = _Budget(self._burst, now)
        budget.tokens = min(self._burst, budget.tokens + (now - budget.stamp) / self._interval)
        budget.stamp = now
        return budget

    def admit(self, reason: str) -> int | None:
        """None: count this rejection only. Otherwise report it, with the returned number of
        rejections of that reason that went unreported before it."""
        budget = self._budget(reason)
        if budget.tokens < 1.0:
            budget.unreported += 1
            return None
        budget.tokens -= 1.0
        unreported, budget.unreported = budget.unreported, 0
        return unreported

    def due(self) -> list[tuple[str, int]]:
        """Reasons with unreported rejections whose budget allows a report now (a summary)."""
        out = []
        for reason in [r for r, b in self._budgets.items() if b.unreported]:
            budget = self._budget(reason)
            if budget.tokens >= 1.0:
                budget.tokens -= 1.0
                out.append((reason, budget.unreported))
                budget.unreported = 0
        return out
