"""A live view of a fleet's update states, fed decoded ``DeviceState`` messages.

On a terminal it redraws one bar per device in place; elsewhere (CI logs, pipes) it prints a line
when a device changes state or crosses a tenth of its download.
"""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from protocol import DeviceState, UpdateState
from runtime.display import printable

_BAR = 28


def render_line(state: DeviceState, note: str = "") -> str:
    active = ", ".join(f"{n}@{v}" for n, v in sorted(state.active.items())) or "-"
    target = f"{state.model}@{state.version}" if state.model else "-"
    filled = int(_BAR * state.progress)
    bar = "#" * filled + "." * (_BAR - filled)
    pct = f"{100 * state.progress:5.1f}%"
    if state.state is UpdateState.ACTIVE:
        bar, pct = "#" * _BAR, "  done"
    line = f"{state.device:<12} [{bar}] {pct} {state.state.value:<11} {target:<10} active {active}"
    if state.reason and state.state in (UpdateState.FAILED, UpdateState.REJECTED):
        line += f"  ({state.reason[:60]})"
    if note:
        line += f"  [{note}]"
    return printable(line)


class ProgressBoard:
    def __init__(self, out: TextIO = sys.stdout, *, live: bool | None = None) -> None:
        self.out = out
        self.live = out.isatty() if live is None else live
        self._states: dict[str, DeviceState] = {}
        self._marks: dict[str, tuple[str, int]] = {}
        self._notes: dict[str, str] = {}
        self._drawn = 0
        self._lock = threading.Lock()

    def update(self, state: DeviceState) -> None:
        with self._lock:
            self._states[state.device] = state
            if self.live:
                self._redraw()
                return
            mark = (state.state.value, int(state.progress * 10))
            if self._marks.get(state.device) != mark:
                self._marks[state.device] = mark
                print(self._line(state), file=self.out, flush=True)

    def annotate(self, device: str, note: str) -> None:
        """A short remark shown at the end of the device's line (e.g. how its link is doing);
        on a terminal it shows at once, elsewhere with the device's next printed line."""
        with self._lock:
            if self._notes.get(device) == note:
                return
            self._notes[device] = note
            if self.live and device in self._states:
                self._redraw()

    def _line(self, state: DeviceState) -> str:
        return render_line(state, self._notes.get(state.device, ""))

    def _redraw(self) -> None:
        if self._drawn:
            self.out.write(f"\x1b[{self._drawn}F")
        lines = [self._line(s) for _, s in sorted(self._states.items())]
        for line in lines:
            self.out.write("\x1b[2K" + line + "\n")
        self._drawn = len(lines)
        self.out.flush()

    def note(self, text: str) -> None:
        """A line of narration above the bars."""
        with self._lock:
            if self.live and self._drawn:
                self.out.write(f"\x1b[{self._drawn}F\x1b[J")
                self._drawn = 0
            print(text, file=self.out, flush=True)
            if self.live:
                self._redraw()

    def states(self) -> dict[str, DeviceState]:
        with self._lock:
            return dict(self._states)
