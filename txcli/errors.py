"""Errors a user can cause. The CLI turns them into one line on stderr and an exit code."""


class TxError(Exception):
    """A failure at run time that is not a bug: a broken run directory, bad input text. Exit 1."""

    exit_code = 1


class UsageError(TxError):
    """A mistake in what the user asked for: a bad recipe, a missing file, a bad option. Exit 2."""

    exit_code = 2
