"""Ctrl-C and SIGTERM, handled so that work stops cleanly.

- :class:`Terminated`: SIGTERM (``kill``, a job scheduler, ``timeout``) raised as an exception in the main thread.
  It is a ``KeyboardInterrupt``, so every clean-up written for Ctrl-C (temporary files removed, ffmpeg stopped)
  runs for it too; the command line ends with status 143 instead of 130.
- :func:`sigterm_raises`: installs that for the duration of a ``with`` block (Python's own default is to die at
  once, leaving temporary files behind).
- :func:`deferred_interrupts`: for a training loop with checkpoints. A first Ctrl-C or SIGTERM is only noted;
  the loop finishes its step, saves a checkpoint and raises it (``pending.raise_if_any()``), so that the run
  resumes from the last step rather than from the last periodic checkpoint. A second one is raised at once.

Signal handlers can only be installed from the main thread; elsewhere these do nothing (signals are delivered to
the main thread anyway).
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread (see the module docstring)."""


def _raise_terminated(signum, frame):
    raise Terminated()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (the previous handler is restored after it)."""
    if not _in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Pending:
    """The signal a :func:`deferred_interrupts` block has noted, if any."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None

    def exception(self) -> KeyboardInterrupt:
        return Terminated() if self.signum == signal.SIGTERM else KeyboardInterrupt()

    def raise_if_any(self) -> None:
        if self.signum is not None:
            raise self.exception()


@contextlib.contextmanager
def deferred_interrupts(notice: Callable[[], None] | None = None) -> Iterator[Pending]:
    """Within the block, the first SIGINT or SIGTERM is noted in the yielded :class:`Pending` (and `notice`, if
    given, called: to tell the user); the block raises it when it has reached a safe point. A second signal
    raises at once. The previous handlers are restored after the block."""
    pending = Pending()
    if not _in_main_thread():
        yield pending
        return

    def note(signum, frame):
        if pending:  # the second one: stop now
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        pending.signum = signum
        if notice is not None:
            notice()

    previous = {s: signal.signal(s, note) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield pending
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
