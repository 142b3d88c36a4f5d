"""``modelcast demo --dashboard``: the dashboard over the demo's database and broker, its URL
on the board, and, once the story is told, the fleet kept running under it until SIGINT or
SIGTERM (so the operator can look around)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .progress import ProgressBoard


@contextmanager
def demo_dashboard(
    port: int | None, db: Path, broker_url: str, fleet: str, board: ProgressBoard
) -> Iterator[Callable[[], None]]:
    """Serves the dashboard while the block runs (``port`` None: no dashboard); yields what
    holds the demo open after its story (nothing to hold without a dashboard)."""
    if port is None:
        yield lambda: None
        return
    from .dashboard import Dashboard, DashboardConfig

    with Dashboard(DashboardConfig(db=db, broker_url=broker_url, fleet=fleet, port=port)) as dash:
        board.note(f"dashboard: {dash.url}  (fleet, releases, rollouts and health, live)")

        def hold() -> None:
            board.note(
                f"the demo is done; the fleet and the dashboard stay up at {dash.url} until Ctrl-C"
            )
            _until_signal()

        yield hold


def _until_signal() -> None:
    """Block until SIGINT or SIGTERM (the handlers before are put back)."""
    stop = threading.Event()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda _signum, _frame: stop.set())
    try:
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
