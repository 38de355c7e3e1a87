"""Errors a user can cause and fix: every job prints their message in one line and exits 2.

Anything else that escapes a job is a bug and ends with its traceback (exit 1).
"""


class UserError(Exception):
    """Something the user can fix: the message names the thing (a key, a path, a task) and the fix."""


class MissingInput(UserError, FileNotFoundError):
    """A file or folder a job needs (a model, a data set, a checkpoint) is not there."""
