"""User-facing errors.

A `Dream3DError` is a user mistake (bad prompt, unknown config key, missing model folder...). Its message is
one clear line; the CLI prints it and exits 2, the app shows it in the page. Anything else is a bug.
"""


class Dream3DError(Exception):
    """A user mistake, reported as one line without a traceback."""


class ConfigError(Dream3DError):
    """Invalid configuration (unknown key, wrong type, bad value)."""


class PromptError(Dream3DError):
    """A prompt that cannot be used (empty, or words a prior does not know)."""


class ModelLoadError(Dream3DError):
    """A prior / model that cannot be found or loaded."""


class DivergedError(Dream3DError):
    """The optimisation diverged (NaN/inf loss): not a user mistake, but reported in one line all the same, with
    what to try; the run's last checkpoint is kept. The CLI exits with its own status (`cli.EXIT_DIVERGED`)."""
