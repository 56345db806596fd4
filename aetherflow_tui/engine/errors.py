"""Errors the operator sees: one line saying what, where and how to fix, plus an exit code.

Exit codes are a contract (DESIGN.md section 3): 0 success, 1 work ran but something
failed, 2 invalid input (config, plan, arguments, keys), 3 stopped by a hard limit.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_LIMIT = 3


class OperatorError(Exception):
    """A problem the operator can fix; str() is the one-line message."""

    exit_code = EXIT_INVALID

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message}; {self.fix}" if self.fix else self.message


class ConfigError(OperatorError):
    """Invalid bouquet config, located at path:line when a file is involved."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 fix: str | None = None) -> None:
        super().__init__(message, fix=fix)
        self.path = path
        self.line = line

    def __str__(self) -> str:
        where = ""
        if self.path:
            where = f"{self.path}:{self.line}: " if self.line else f"{self.path}: "
        return where + super().__str__()


class UsageError(OperatorError):
    """Bad arguments: an unknown provider or model, a missing key, an empty prompt."""


class CallFailed(OperatorError):
    """The work ran and the provider call failed."""

    exit_code = EXIT_FAILED


class PlanError(ConfigError):
    """An invalid plan.json, located at path:line and named by its place in the plan."""


class LimitReached(OperatorError):
    """A hard spending limit stopped the work (exit 3)."""

    exit_code = EXIT_LIMIT


class BudgetRefused(LimitReached):
    """A call the hard limits refused before it went out; `refusal` says which limit."""

    def __init__(self, what: str, refusal: object) -> None:
        super().__init__(f"{what}: {refusal.reason}",  # type: ignore[attr-defined]
                         fix=refusal.fix)  # type: ignore[attr-defined]
        self.refusal = refusal


class DispatchHeld(LimitReached):
    """An emergency stop holds every dispatch until the operator resumes (exit 3)."""


class StoreUnavailable(OperatorError):
    """The database cannot be written (a full or failing disk): dispatch holds (exit 1)."""

    exit_code = EXIT_FAILED
