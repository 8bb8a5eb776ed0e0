"""One exception root, specific subclasses, each mapped to a CLI exit code once (CONTRACT §3)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_NOT_FOUND_OR_REFUSED = 1
EXIT_USAGE = 2
EXIT_STORAGE = 3


class FlowledgerError(Exception):
    """Root of every error flowledger raises on purpose."""

    exit_code = EXIT_NOT_FOUND_OR_REFUSED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def details(self) -> list[str]:
        """Further lines the CLI prints on stderr under the message (none by default)."""
        return []


class InvalidInputError(FlowledgerError, ValueError):
    """A value given by the caller is not acceptable (bad enum, naive time, bad duration…)."""

    exit_code = EXIT_USAGE


class TaskNotFoundError(FlowledgerError, LookupError):
    def __init__(self, lookup: str) -> None:
        super().__init__(f"Task not found: {lookup}.")
        self.lookup = lookup


class FlowNotFoundError(FlowledgerError, LookupError):
    def __init__(self, lookup: str) -> None:
        super().__init__(f"Flow not found: {lookup}.")
        self.lookup = lookup


class AmbiguousLookupError(FlowledgerError, LookupError):
    """An id prefix that names several records (CONTRACT §7): a lookup miss, with the first candidates."""

    def __init__(self, prefix: str, kind: str, matches: int, candidates: list[str]) -> None:
        super().__init__(f"Ambiguous id prefix '{prefix}': matches {matches} {kind}.")
        self.prefix = prefix
        self.kind = kind  # "tasks" | "flows"
        self.matches = matches
        self.candidates = candidates

    @property
    def details(self) -> list[str]:
        more = self.matches - len(self.candidates)
        return [f"  {c}" for c in self.candidates] + ([f"  … and {more} more"] if more > 0 else [])


class OperationRefusedError(FlowledgerError):
    """The operation was understood but refused (already terminal, still active, …)."""


class OwnerKeyRequiredError(InvalidInputError):
    def __init__(self, message: str = "Task ownerKey is required.") -> None:
        super().__init__(message)


class ParentFlowLinkError(FlowledgerError):
    """A task cannot link to the parent flow it names; `code` says why (REFERENCE §2.2 step 7)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class StorageUnavailableError(FlowledgerError):
    """The database cannot be opened, read or written."""

    exit_code = EXIT_STORAGE


class InvalidPersistedValueError(StorageUnavailableError):
    """A row written outside flowledger holds a value we refuse to coerce; named, never guessed."""

    def __init__(self, what: str, ident: str, column: str, value: object) -> None:
        super().__init__(f"Invalid persisted {what} {ident}: {column}={value!r}")
        self.column = column
        self.value = value


# The names before every exception ended in `Error` (issue 13): kept importable, the very same classes.
InvalidInput = InvalidInputError
TaskNotFound = TaskNotFoundError
FlowNotFound = FlowNotFoundError
AmbiguousLookup = AmbiguousLookupError
OperationRefused = OperationRefusedError
OwnerKeyRequired = OwnerKeyRequiredError
StorageUnavailable = StorageUnavailableError
InvalidPersistedValue = InvalidPersistedValueError
