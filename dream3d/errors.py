"""User-facing errors.

A `Dream3DError` is a user mistake (bad prompt, unknown config key, missing model folder...). Its message is
one clear line; the CLI prints it and exits 2, the app shows it in the page. Anything else is a bug. User text
inside a message goes through `safe_text` (control characters escaped, at most 200 characters).
"""

MESSAGE_TEXT_LIMIT = 200  # characters of user text shown in a message; the rest is counted


def safe_text(text: object, limit: int = MESSAGE_TEXT_LIMIT) -> str:
    r"""`text` (or its str) fit to print inside a one-line message: every character that is not printable
    (control characters such as ESC or CR, line breaks, bidi overrides, bytes that were not UTF-8) shown as its
    escape, then cut to `limit` characters with a count of what was cut.

    >>> print(safe_text("a" + chr(27) + "[31mred" + chr(13)))
    a\x1b[31mred\r
    >>> safe_text("x" * 250)[-26:]
    'xx... (50 more characters)'
    """
    text = str(text)
    shown = "".join(ch if ch.isprintable() else ch.encode("unicode_escape", "backslashreplace").decode("ascii")
                    for ch in text)
    if len(shown) <= limit:
        return shown
    return f"{shown[:limit]}... ({len(shown) - limit} more characters)"


def os_error_text(e: OSError) -> str:
    """What went wrong in a file-system failure, in words: 'no space left on device' for a full disk or quota,
    else the system's description."""
    import errno

    return "no space left on device" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))


class Dream3DError(Exception):
    """A user mistake, reported as one line without a traceback."""


def one_line(e: BaseException, limit: int = 300) -> str:
    """A one-line description of an exception (dream3d errors are already one clear line)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if not isinstance(e, Dream3DError):
        text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


class ConfigError(Dream3DError):
    """Invalid configuration (unknown key, wrong type, bad value)."""


class PromptError(Dream3DError):
    """A prompt that cannot be used (empty, or words a prior does not know)."""


class ModelLoadError(Dream3DError):
    """A prior / model that cannot be found or loaded."""


class DivergedError(Dream3DError):
    """The optimisation diverged (NaN/inf loss): not a user mistake, but reported in one line all the same, with
    what to try; the run's last checkpoint is kept. The CLI exits with its own status (`cli.EXIT_DIVERGED`)."""
