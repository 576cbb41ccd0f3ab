"""The exceptions agent-sft raises on purpose. They share one base, `AgentSFTError`, so a caller (the
CLI, a script, a scheduler) can tell a problem the user can fix from a bug by catching one class."""

from __future__ import annotations


class AgentSFTError(Exception):
    """Base of every error agent-sft raises about its input: config, data, env, policy or server.

    `hint`, when set, is what to do about it in this context ("" when the message says it all).
    """

    hint: str | None = None

    def with_hint(self, hint: str) -> AgentSFTError:
        self.hint = hint
        return self

    def __reduce__(self) -> tuple:
        # Rebuilt from its args and attributes without calling `__init__`, whose signature a subclass may
        # change: the error a Ray collector raises reaches the driver as the same class, attributes and all.
        return _rebuild, (type(self), self.args), self.__dict__


def _rebuild(cls: type[AgentSFTError], args: tuple) -> AgentSFTError:
    return cls.__new__(cls, *args)


class RunFailedError(AgentSFTError):
    """The run stopped because what it plays with failed for good while it ran: a policy server that no
    longer answers usefully, env servers that are all gone, an env that fails every episode.

    The episodes sealed before the stop are kept; running the same collection again plays the rest,
    the episodes that ended in the error included. `agent-sft` exits with code 3 on it.
    """


class ConfigError(AgentSFTError, ValueError):
    """A configuration key or value a user can fix."""


class DatasetError(AgentSFTError):
    """A dataset folder, shard or request that cannot be used as it is."""


class NotADatasetError(DatasetError):
    pass


class SchemaVersionError(DatasetError):
    pass


class CorruptShardError(DatasetError):
    pass


class DiskFullError(DatasetError):
    """No space left on the folder's device; what was sealed before is intact."""


class ConfigMismatchError(DatasetError):
    """The folder was collected with a different configuration."""
