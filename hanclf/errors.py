"""The project's one error type: raised deep in the library, turned into a one-line message and
an exit code by the CLI (2: the user's input or flags are wrong; 1: something failed at run time)."""


class HanclfError(Exception):
    exit_code = 1


class UsageError(HanclfError):
    exit_code = 2
