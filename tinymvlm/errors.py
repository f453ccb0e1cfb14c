"""The one exception type the CLI turns into a one-line message instead of a traceback."""


class TmvError(Exception):
    """A problem with the user's input or environment, worded as what to do about it."""
