"""The one exception type the CLI turns into a one-line message instead of a traceback."""


class TmvError(Exception):
    """A problem with the user's input or environment, worded as what to do about it."""


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (its type name when it has none), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
