"""Errors that stop the server, split by the exit code the `live` command gives them."""


class UsageError(Exception):
    """The operator asked for something invalid (flag, setting, URL): exit code 2."""


class StartupError(Exception):
    """The server cannot run on this machine as configured (port, data dir, Redis): exit code 1."""
