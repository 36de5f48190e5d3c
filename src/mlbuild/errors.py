"""The one error type users see: a single line naming what is wrong and where."""


class MlbuildError(Exception):
    """A user-facing error; str(error) is the whole, one-line message."""

    exit_status = 1


class InputError(MlbuildError):
    """Bad recipe, template or configuration: nothing may run (exit status 2)."""

    exit_status = 2
