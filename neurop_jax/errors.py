"""Errors meant for the user: a bad input, option, config value or file, never a bug.

Their message is one line that names the problem and the fix (the option or config field to set).
The command lines (``neurop_jax.main``, ``neurop_jax.upsample``) print it as ``error: <message>``
and exit with status 1, without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class InputError(ValueError):
  """A bad input, option or config value; the message names the fix."""


class MissingInputError(InputError, FileNotFoundError):
  """A file or folder the run needs does not exist (or holds nothing usable)."""
