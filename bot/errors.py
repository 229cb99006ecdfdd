"""The project's exception classes. Each message states what failed, on which value, and what to do."""


class BotError(Exception):
    """Base class of every error the bot raises on purpose."""


class ConfigError(BotError):
    """A setting is missing or invalid."""


class InputError(BotError):
    """A command-line argument or an input file is invalid."""


class NotFoundError(BotError):
    """A mailbox, person or organisation named by the user does not exist."""


class SourceError(BotError):
    """A mail source failed to deliver items."""


class SourceDeferred(SourceError):
    """The server asked to wait longer than allowed; the sync is rescheduled, not failed."""

    def __init__(self, message: str, retry_after_seconds: float):
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class SyncStateExpired(SourceError):
    """The server rejected a stored sync cursor; the folder must be read again from the start."""


class PermissionDenied(BotError):
    """A user tried to act on data that is not theirs."""
