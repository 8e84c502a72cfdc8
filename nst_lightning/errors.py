"""The one exception type users see: its message is a single actionable line, printed without a traceback."""


class NSTError(Exception):
    """A problem with the user's input or environment that the user can fix."""
