"""The one exception type users see: its message is a single actionable line, printed without a traceback."""


class NSTError(Exception):
    """A problem with the user's input or environment that the user can fix."""


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message``: library errors (torch's unpickling advice) can span many lines."""
    return f"{exc.__class__.__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
