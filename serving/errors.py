"""The one base of every error a user can fix: the CLI prints it (no traceback) and exits with its code."""

from __future__ import annotations


class TriageError(Exception):
    """A problem the user can fix (a bad file, a server down, a wrong token): the message says what to do."""

    exit_code = 2
