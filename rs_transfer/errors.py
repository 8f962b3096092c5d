"""The one exception type the CLI turns into a one-line message (no traceback): bad input a person can fix."""


class UserError(Exception):
    """Bad input: the message names the file/option and the fix."""
