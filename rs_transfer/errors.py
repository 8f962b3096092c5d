"""The exception types the CLI turns into one-line messages (no traceback).

- :class:`UserError`: bad input a person can fix; the message names the file/option and the fix.
- :class:`RunInterrupted`: a run stopped on request (SIGTERM before a preemption, Ctrl-C) after saving what resume
  needs; not a failure of the run, so studies do not record it as a failed cell, they stop.
"""


class UserError(Exception):
    """Bad input: the message names the file/option and the fix."""


class RunInterrupted(Exception):
    """Training stopped by a signal at an iteration boundary; ``exit_code`` is the shell's ``128 + signal``."""

    def __init__(self, message: str, *, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum
