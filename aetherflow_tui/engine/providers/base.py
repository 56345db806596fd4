"""What every provider kind speaks: a chat request in, a measured result or a typed error out.

Routing acts on the error type (retry, back off, open a circuit, fall back), so each
failure a provider can have maps to exactly one class here. A new API kind implements
`Provider` and callers do not change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..text import excerpt
from ..usage import Energy, Usage  # Usage lived here and is still importable from here

OnToken = Callable[[str], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str  # system, user or assistant
    content: str


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    messages: tuple[ChatMessage, ...]
    max_tokens: int | None = None
    temperature: float | None = None
    stream: bool = True
    json_mode: bool = False

    @classmethod
    def ask(cls, model: str, prompt: str, **kw: object) -> ChatRequest:
        return cls(model=model, messages=(ChatMessage("user", prompt),), **kw)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class ChatResult:
    provider: str
    model: str  # the model the provider says answered
    text: str
    usage: Usage
    ttft_s: float | None  # time to first token; None when not streamed
    duration_s: float
    finish_reason: str | None = None
    billed_usd: float | None = None  # what the provider says it charged, where it says so
    energy: Energy | None = None  # measured on this machine (local models); else estimated

    @property
    def tokens_per_s(self) -> float | None:
        """Output tokens per second of generation (after the first token when streamed)."""
        span = self.duration_s - (self.ttft_s or 0.0)
        if self.usage.output_tokens <= 0 or span <= 0:
            return None
        return self.usage.output_tokens / span


class Provider(Protocol):
    id: str

    async def complete(self, request: ChatRequest, on_token: OnToken | None = None
                       ) -> ChatResult: ...

    async def aclose(self) -> None: ...


@dataclass(eq=False)
class ProviderError(Exception):
    """A failed call. `excerpt` is a truncated, escaped piece of what the provider sent."""

    provider: str
    message: str
    status: int | None = None
    excerpt: str = ""
    retryable: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        # Messages may carry a base URL, and some APIs take keys in the query string.
        self.message = excerpt(self.message, limit=300)
        self.excerpt = excerpt(self.excerpt)
        super().__init__(str(self))

    @property
    def kind(self) -> str:
        return _KINDS[type(self)]

    def __str__(self) -> str:
        status = f" (HTTP {self.status})" if self.status else ""
        tail = f": {self.excerpt}" if self.excerpt else ""
        return f"{self.provider}: {self.message}{status}{tail}"


class AuthFailed(ProviderError):
    """401/403: the key is wrong, revoked, or lacks access to the model."""


@dataclass(eq=False)
class RateLimited(ProviderError):
    retry_after_s: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.retryable = True


@dataclass(eq=False)
class Overloaded(ProviderError):
    """5xx or 529: the provider is failing or shedding load."""

    retry_after_s: float | None = None  # a 503 may say when to come back

    def __post_init__(self) -> None:
        super().__post_init__()
        self.retryable = True


class ProviderTimeout(ProviderError):
    def __post_init__(self) -> None:
        super().__post_init__()
        self.retryable = True


class ConnectionFailed(ProviderError):
    """DNS, refused, reset, or a stream cut before it finished."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.retryable = True


class Unreachable(ConnectionFailed):
    """No connection could be made at all (refused, DNS, no route): the network or the
    provider is down, and retrying the same provider at once will not help."""


class MalformedResponse(ProviderError):
    """The provider answered, but not with a chat completion we can read."""


class Rejected(ProviderError):
    """Another 4xx: the request itself is wrong (unknown model, context too long...)."""


_KINDS: dict[type, str] = {
    ProviderError: "error",
    AuthFailed: "auth",
    RateLimited: "rate_limited",
    Overloaded: "overloaded",
    ProviderTimeout: "timeout",
    ConnectionFailed: "connection",
    Unreachable: "connection",
    MalformedResponse: "malformed",
    Rejected: "rejected",
}
