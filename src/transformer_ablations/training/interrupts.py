"""SIGINT and SIGTERM as one exception that Lightning lets through.

Lightning's ``fit`` turns a ``KeyboardInterrupt`` into ``sys.exit(1)`` and answers SIGTERM by
raising ``SIGTERMException`` (a ``SystemExit`` with code 0) at the next step, so neither reaches
the caller as an interruption. While :func:`interrupts_raise` is active, both signals raise
:class:`RunInterrupted` instead (a ``BaseException`` that is not a ``KeyboardInterrupt``: Lightning
runs its ``on_exception`` hooks and re-raises it), and the run is recorded as ``interrupted``.
Lightning composes its own SIGTERM handler with this one (it calls ours after its own), so its
DDP launcher still forwards the signal. A second signal while the first is being handled is only
counted, so the record of the first is written whole.

A signal is never lost to library code that swallows exceptions: `datasets`' fingerprint hasher
wraps dill in a bare ``except:``, so a SIGTERM landing there used to vanish and the run finished
with exit 0. The received signal is remembered, and :func:`raise_if_interrupted` raises it again at
the safe points: after data preparation, before every training and validation batch
(``callbacks.InterruptCheck``), after ``fit`` and before the CLI exits. A signal that lands in code
Python itself cannot raise from (a weakref callback, ``__del__``, a GC finaliser) is remembered the
same way; its "Exception ignored in ..." traceback is not printed (:func:`_quiet_unraisable`).

This module imports no Lightning (and so no matplotlib): the CLI imports it for every command.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(BaseException):
    """SIGINT / SIGTERM arrived; ``exit_code`` is the shell's 128 + signal number."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        self.name = signal.Signals(self.signum).name
        super().__init__(f"interrupted by {self.name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def exit_code_of(name: str | None) -> int:
    """``SIGTERM`` -> 143, ``SIGINT`` (and anything unknown) -> 130."""
    try:
        return 128 + int(signal.Signals[name or "SIGINT"])
    except KeyError:
        return 130


# the signal this process received inside the outermost `interrupts_raise` (None: none yet)
# and whether the run code has recorded it (`interrupt_recorded`: it is not raised again)
_STATE: dict = {"depth": 0, "received": None, "recorded": False}


def _quiet_unraisable(previous):
    """A ``sys.unraisablehook`` that drops :class:`RunInterrupted` (remembered in ``_STATE``, raised
    again at the next safe point) and hands every other unraisable exception to ``previous``."""

    def hook(unraisable) -> None:
        if not isinstance(unraisable.exc_value, RunInterrupted):
            previous(unraisable)

    return hook


@contextlib.contextmanager
def interrupts_raise():
    """SIGINT / SIGTERM raise :class:`RunInterrupted` in this process (the main thread; elsewhere
    a no-op), the previous handlers come back on exit. Forked DataLoader workers inherit the
    handler but ignore it: the main process shuts them down. Nested uses share one state: the
    first signal is the one raised, and it is forgotten when the outermost use ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner or _STATE["received"] is not None:
            return
        _STATE["received"] = int(signum)
        raise RunInterrupted(signum)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    previous_hook, sys.unraisablehook = sys.unraisablehook, _quiet_unraisable(sys.unraisablehook)
    _STATE["depth"] += 1
    try:
        yield
    finally:
        _STATE["depth"] -= 1
        if _STATE["depth"] == 0:
            _STATE.update(received=None, recorded=False)
        sys.unraisablehook = previous_hook
        for s, old in previous.items():
            signal.signal(s, old if old is not None else signal.SIG_DFL)


def raise_if_interrupted() -> None:
    """Raise :class:`RunInterrupted` again if a signal arrived and library code swallowed it."""
    if _STATE["received"] is not None and not _STATE["recorded"]:
        raise RunInterrupted(_STATE["received"])


def interrupt_recorded() -> None:
    """The run's record says `interrupted`: the signal has been answered, later checks pass."""
    _STATE["recorded"] = True

