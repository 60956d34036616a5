"""The project's small error hierarchy and the exit statuses it maps to.

Every error that reaches the user is one of these: the CLI prints its message on
one line and exits with its ``exit_status``. Malformed *packets* never raise: they
are counters (see ``devourer.packet.layout``).
"""

EXIT_OK = 0
EXIT_FAILURE = 1  # a process of the engine died or an output failed
EXIT_USAGE = 2  # invalid flag, environment variable or config value
EXIT_INPUT = 3  # a capture source or the output cannot be opened
EXIT_DAMAGED = 4  # a capture file is damaged; every flow read before the damage was written
EXIT_INTERRUPTED = 130  # Ctrl-C before the engine ran (the shell's 128 + SIGINT)


class DevourerError(Exception):
    """Base of every error devourer reports to its user."""

    exit_status = EXIT_FAILURE


class UsageError(DevourerError):
    """A flag, environment variable or config-file value is invalid."""

    exit_status = EXIT_USAGE


class SourceError(DevourerError):
    """A capture file or interface (or the output file) cannot be opened."""

    exit_status = EXIT_INPUT


class DamagedCaptureError(DevourerError):
    """A capture file ends in the middle of a record or holds an impossible one."""

    exit_status = EXIT_DAMAGED


class DecodeError(ValueError):
    """Raised by the name-packet extractors on bytes they cannot parse."""
