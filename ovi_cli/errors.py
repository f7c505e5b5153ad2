"""The one exception type whose message is shown to a user as a single line."""


class OviError(Exception):
    """A problem the user can fix: the CLI prints `ovi: error: <message>` and exits non-zero."""

    exit_code: int = 2
