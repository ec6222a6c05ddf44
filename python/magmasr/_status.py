"""The progress line of stderr, one for the whole process: the command line's (tiles, frames, images) and
:func:`magmasr.train.fit`'s (steps) are the same object, so that whichever message comes next, from either, starts
on a line of its own.

On a terminal each update rewrites the line in place and erases what a longer previous text left at its end; on a
file or a pipe the updates are separated by carriage returns only (``tail -f`` and ``less -r`` show the latest).
"""
from __future__ import annotations

import sys


class StatusLine:
    """A progress line on stderr (nothing at all when not `enabled`)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled, self.open = enabled, False

    def update(self, text: str) -> None:
        """Replaces the line with `text` (no newline: the next update replaces it)."""
        if not self.enabled:
            return
        self.open = True  # first: an interrupt that lands just after the write must still end the line
        err = sys.stderr  # looked up at each call: tests and callers may swap it
        err.write(f"\r{text}\033[K" if err.isatty() else f"\r{text}")
        err.flush()

    def end(self) -> None:
        """Ends the line, if one is open, so that what follows starts on a line of its own."""
        if self.enabled and self.open:
            self.open = False
            sys.stderr.write("\n")
            sys.stderr.flush()

    def say(self, text: str) -> None:
        """`text` on a line of its own (after the progress line, if one is open)."""
        if self.enabled:
            self.end()
            sys.stderr.write(text + "\n")
            sys.stderr.flush()


def duration(seconds: float) -> str:
    """A rough human duration: '42 s', '3 min 05 s', '1 h 04 min' (rounded down to the unit shown)."""
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def time_left(done: int, total: int | None, elapsed: float) -> str:
    """', about 3 min 05 s left' at the pace so far (`done` of `total` units in `elapsed` seconds), or '' when
    there is no total, nothing done yet, or nothing left."""
    if not total or done <= 0 or done >= total or elapsed <= 0:
        return ""
    return f", about {duration(elapsed / done * (total - done))} left"


#: The process's progress line, and one that prints nothing (fit(progress=False)).
STDERR = StatusLine()
QUIET = StatusLine(enabled=False)
