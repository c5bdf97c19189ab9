"""The app's errors: refusals, with a stable code (``AppError``), and errors that stop the
server, split by the exit code the `live` command gives them."""


class AppError(Exception):
    """The app's one refusal base: a stable ``code`` (docs/http-api.md and docs/protocol.md
    list them) and a ``message`` for people. A refusal changes nothing. Subclasses say how it is
    answered (an HTTP status, say); one with the same two fields derives in one line:
    ``class SaleRefused(AppError): ...``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class UsageError(Exception):
    """The operator asked for something invalid (flag, setting, URL): exit code 2."""


class StartupError(Exception):
    """The server cannot run on this machine as configured (port, data dir, Redis): exit code 1."""
