"""The one exception type users see: its message is a single actionable line, printed without a traceback."""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn


class NSTError(Exception):
    """A problem with the user's input or environment that the user can fix."""


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message``: library errors (torch's unpickling advice) can span many lines."""
    return f"{exc.__class__.__name__}: {(str(exc).strip().splitlines() or [''])[0]}"


def full_error() -> bool:
    """Whether ``HYDRA_FULL_ERROR=1`` asks for tracebacks instead of one-line errors."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def user_error(exc: BaseException, plain: bool = False) -> NoReturn:
    """Bad input (NSTError, Lightning's MisconfigurationException): one ``error: ...`` line and exit 2, no
    traceback; with HYDRA_FULL_ERROR=1 the exception is raised instead. Shared by the entry points.

    The line goes through the ``nst_lightning`` logger (after Hydra's job-log prefix), or, with ``plain``, straight
    to stderr: before Hydra has set up the job's logging (its own format would hide the ``error:`` start).
    """
    if full_error():
        raise exc
    message = f"error: {exc}"
    if plain:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
    else:
        logging.getLogger("nst_lightning").error("%s", message)
    sys.exit(2)
