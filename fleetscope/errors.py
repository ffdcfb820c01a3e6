"""The one exception type a user sees: a message that names the problem."""

from __future__ import annotations


class FleetscopeError(Exception):
    """A failure with a message meant for the person running fleetscope.

    The CLI prints ``str(err)`` and exits with status 2; no traceback. Raise it
    only with a sentence that names the thing that is wrong and, where there is
    one, the setting that fixes it.
    """
