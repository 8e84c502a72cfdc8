"""Ctrl-C and SIGTERM at any moment of a run: recorded first, acted on where that is safe.

Python's own SIGINT handler raises KeyboardInterrupt wherever the main thread happens to be. During start-up that
is inside library code: torch's and Lightning's imports (where an interrupted ``exec`` makes the interpreter kill
itself with SIGINT at exit, whatever code the program exits with), Lightning's Trainer set-up (whose clean-up
then fails with an unrelated error), or code that catches every exception and carries on (the signal is lost, and
the run goes on for hours). So the entry point calls ``install()`` first: from then on the first SIGINT or SIGTERM
is only recorded, and the run acts on it at its next safe point: ``check()`` between the start-up phases (raises
``Interrupted``), and the run's own handler (engine.callbacks.GracefulStop), which takes a recorded signal when it
is installed, so that the signal that arrived while the Trainer was starting stops the run before its first step.

A second Ctrl-C raises at once, as during the steps: whoever presses it twice does not want to wait. Inside
``raising()`` (a download: waiting on the network is safe to abandon) the first one raises at once too.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_received: int | None = None  # the first signal since install(), until taken
_raising = 0  # depth of raising() blocks
_previous: dict[int, Any] = {}  # the handlers install() replaced


class Interrupted(KeyboardInterrupt):
    """A recorded SIGINT or SIGTERM, raised at a safe point; ``signum`` says which (exit code 128 + signum)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _handler(signum: int, frame: Any) -> None:
    global _received
    if _received is not None and signum == signal.SIGINT:
        raise Interrupted(signum)  # the second Ctrl-C: at once
    if _received is None:
        _received = signum
    if _raising:
        raise Interrupted(_received)


def installed() -> bool:
    return signal.getsignal(signal.SIGINT) is _handler


def install() -> None:
    """Record SIGINT and SIGTERM from now on (main thread only; a no-op where it is installed already)."""
    global _received
    if threading.current_thread() is not threading.main_thread() or installed():
        return
    _received = None
    for sig in SIGNALS:
        _previous[sig] = signal.signal(sig, _handler)


def uninstall() -> None:
    """Put back the handlers ``install`` replaced (an entry point called in-process, e.g. by tests, leaves the
    caller's Ctrl-C as it was)."""
    global _received
    if threading.current_thread() is not threading.main_thread():
        return
    for sig, previous in _previous.items():
        if signal.getsignal(sig) is _handler:
            signal.signal(sig, previous)
    _previous.clear()
    _received = None


def pending() -> int | None:
    """The signal recorded and not yet acted on, or None."""
    return _received


def take() -> int | None:
    """The recorded signal, now handed over (a handler that acts on it from here on takes it), or None."""
    global _received
    signum, _received = _received, None
    return signum


def check() -> None:
    """Raise ``Interrupted`` if a signal has been recorded: the safe points between the phases of start-up."""
    if _received is not None:
        raise Interrupted(_received)


@contextlib.contextmanager
def raising() -> Iterator[None]:
    """Inside: a signal raises ``Interrupted`` at once (one recorded before is raised on entry). For waits in this
    package's own code that can be abandoned at any moment, such as a download into a temp file."""
    global _raising
    check()
    _raising += 1
    try:
        yield
    finally:
        _raising -= 1
