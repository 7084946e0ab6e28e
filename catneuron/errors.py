"""The one exception type whose message is shown to users as is."""


class UserError(Exception):
    """Bad input from a user (a flag, a file, a config): the CLI prints the message on one line and exits 2."""
