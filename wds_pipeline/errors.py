"""The package's one error family.

Every error wds_pipeline raises on purpose derives from :class:`WdsPipelineError`, so a
caller (and the CLI, which turns the family into one-line messages) can catch them all at
once. Each class also keeps the builtin base it had before the family existed
(``ValueError`` for bad input, ``OSError`` for storage, ``RuntimeError`` for a run that
failed), so ``except ValueError`` / ``except OSError`` code written against earlier
versions still catches what it caught.

The family's branches:

- :class:`ConfigError`: a config or build option that cannot be used (the fix is to change
  the command or the YAML);
- :class:`ShardError`: a shard that cannot be read as built: :class:`ShardFormatError`
  (truncated or not a shard), its subclass ``ShardIntegrityError`` (bytes differ from the
  index's digest, in ``readpath``) and ``ShardReadError`` (storage kept failing);
- :class:`ResumeMismatch`: saved state (a checkpoint, a ``LoaderState``) that belongs to
  another dataset or configuration;
- leaf errors next to the code that raises them (``DiskFullError``, ``CheckpointError``,
  ``BuildError``, ``AudioDecodeError``, ...), each a subclass of the base.

Messages name the file or key and the fix; this module holds no behaviour (only the
classes and the exit statuses the CLI maps them to).
"""

from __future__ import annotations

# The exit statuses every command returns: 2 for a ConfigError (change the command),
# 1 for any other error of the family, 130 for Ctrl-C.
EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class WdsPipelineError(Exception):
    """Base of every error wds_pipeline raises on purpose."""


class ConfigError(WdsPipelineError, ValueError):
    """A config key or option is unknown, has the wrong type, or an impossible value."""


class ShardError(WdsPipelineError):
    """A shard cannot be read as the index describes it."""


class ShardFormatError(ShardError, ValueError):
    """A shard is truncated, corrupt, or not in the expected format."""


class ResumeMismatch(WdsPipelineError, ValueError, RuntimeError):
    """Saved state (a checkpoint or a loader state) was written for another dataset or
    configuration. Both builtin bases are kept: the loader raised ``ValueError`` and the
    trainer ``RuntimeError`` before the two were one class."""
