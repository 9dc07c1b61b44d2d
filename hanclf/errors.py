"""The project's one error type: raised deep in the library, turned into a one-line message and
an exit code by the CLI (2: the user's input or flags are wrong; 1: something failed at run time);
and its one warning type, which the CLI prints as a `warning: ...` line."""


class HanclfError(Exception):
    exit_code = 1


class UsageError(HanclfError):
    exit_code = 2


class HanclfWarning(UserWarning):
    pass
