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


#: The process's progress line, and one that prints nothing (fit(progress=False)).
STDERR = StatusLine()
QUIET = StatusLine(enabled=False)
