"""API keys: the OS keychain (or an env var the config names), and redaction everywhere else.

A key is held as a `Secret`, whose repr and str never show it, so a key cannot reach a
log line, a traceback's locals or the screen by accident. Only the provider client calls
`reveal()`, to build the Authorization header.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from .errors import OperatorError

if TYPE_CHECKING:
    from keyring.backend import KeyringBackend

    from .config import ProviderSpec

SERVICE = "aetherflow"

_FIX_ENV = 'or set key = "env:NAME" for this provider in the config'


class Secret:
    """A key that does not print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> object:
        raise TypeError("a Secret cannot be pickled")


class KeyState(StrEnum):
    PRESENT = "present"
    MISSING = "missing"
    NOT_NEEDED = "not needed"
    UNAVAILABLE = "unavailable"
    UNREADABLE = "unreadable"


@dataclass(frozen=True, slots=True)
class KeyStatus:
    state: KeyState
    source: str  # "keyring", "env:NAME" or "none"
    detail: str | None = None  # why it is missing or unusable, and the fix


class KeychainUnavailable(OperatorError):
    """No usable keychain: the message names the fix for this machine."""


class UnreadableKey(OperatorError):
    """A stored or typed key that cannot be sent as an HTTP header."""


def check_key_text(provider_id: str, text: str) -> Secret:
    """Accept a key typed or pasted by the operator, or refuse with the reason."""
    value = text.strip()
    if not value:
        raise UnreadableKey(f"the key for {provider_id} is empty", fix="paste the whole key")
    if any(ch.isspace() for ch in value):
        raise UnreadableKey(f"the key for {provider_id} contains spaces or line breaks",
                            fix="paste the key alone, on one line")
    if not value.isascii() or not value.isprintable():
        raise UnreadableKey(f"the key for {provider_id} contains non-ASCII or control "
                            "characters", fix="copy it again from the provider's console")
    return Secret(value)


class KeyVault:
    """Reads and writes provider keys. Every method blocks: call it from a thread."""

    def __init__(self, backend: KeyringBackend | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self._backend = backend
        self._environ = os.environ if environ is None else environ
        self._lock = threading.Lock()

    def status(self, spec: ProviderSpec) -> KeyStatus:
        try:
            secret = self.get(spec)
        except KeychainUnavailable as exc:
            return KeyStatus(KeyState.UNAVAILABLE, spec.key, str(exc))
        except UnreadableKey as exc:
            return KeyStatus(KeyState.UNREADABLE, spec.key, str(exc))
        if spec.key == "none":
            return KeyStatus(KeyState.NOT_NEEDED, "none")
        if secret is None:
            if spec.key_env:
                hint = f"export {spec.key_env}=... before starting aetherflow"
            else:
                hint = f"run `aetherflow key set {spec.id}` or press k on its row"
            return KeyStatus(KeyState.MISSING, spec.key, hint)
        return KeyStatus(KeyState.PRESENT, spec.key)

    def get(self, spec: ProviderSpec) -> Secret | None:
        if spec.key == "none":
            return None
        if spec.key_env:
            value = self._environ.get(spec.key_env)
            if not value:
                return None
            secret = self._checked(spec.id, value, where=f"environment variable {spec.key_env}")
        else:
            value = self._call(lambda b: b.get_password(SERVICE, spec.id))
            if value is None:
                return None
            secret = self._checked(spec.id, value, where="the keychain")
        REDACTOR.remember(secret)
        return secret

    def store(self, provider_id: str, secret: Secret) -> None:
        self._call(lambda b: b.set_password(SERVICE, provider_id, secret.reveal()))
        REDACTOR.remember(secret)

    def delete(self, provider_id: str) -> bool:
        from keyring.errors import PasswordDeleteError

        try:
            self._call(lambda b: b.delete_password(SERVICE, provider_id), passthrough=(
                PasswordDeleteError,))
        except PasswordDeleteError:
            return False
        return True

    def backend_name(self) -> str:
        try:
            backend = self._resolve()
        except KeychainUnavailable as exc:
            return f"unavailable ({exc.message})"
        return f"{type(backend).__module__}.{type(backend).__name__}"

    @staticmethod
    def _checked(provider_id: str, value: str, *, where: str) -> Secret:
        try:
            return check_key_text(provider_id, value)
        except UnreadableKey as exc:
            raise UnreadableKey(f"{exc.message} (read from {where})",
                                fix=f"set it again with `aetherflow key set {provider_id}`"
                                ) from None

    def _resolve(self) -> KeyringBackend:
        if self._backend is not None:
            return self._backend
        with self._lock:
            if self._backend is None:
                self._backend = _os_keychain()
        return self._backend

    def _call(self, op, passthrough: tuple[type[BaseException], ...] = ()):
        backend = self._resolve()
        try:
            return op(backend)
        except passthrough:
            raise
        except Exception as exc:
            raise _explain(exc) from None


def _os_keychain() -> KeyringBackend:
    """The keychain keyring picks, unless it is only a plaintext or failing fallback.

    keyring happily falls back to a plaintext file when keyrings.alt is installed and no
    real keychain exists; keys must not land there unless the operator chose it.
    """
    import keyring
    import keyring.core

    explicit = keyring.core.load_env() or keyring.core.load_config()
    if explicit is not None:
        return explicit
    backend = keyring.get_keyring()
    if getattr(backend, "priority", 0) < 1:
        raise KeychainUnavailable(
            "no secure OS keychain found (headless Linux without a Secret Service?)",
            fix="start gnome-keyring or another Secret Service, " + _FIX_ENV,
        )
    return backend


def _explain(exc: Exception) -> KeychainUnavailable:
    from keyring.errors import KeyringLocked, NoKeyringError

    text = REDACTOR.redact(str(exc))
    locked = isinstance(exc, KeyringLocked) or any(
        marker in text for marker in ("-25308", "User interaction is not allowed", "locked")
    )
    if locked:
        return KeychainUnavailable(
            "the keychain is locked (the macOS login keychain is, over SSH)",
            fix="run `security unlock-keychain ~/Library/Keychains/login.keychain-db`, "
            + _FIX_ENV,
        )
    if isinstance(exc, NoKeyringError) or "Secret Service" in text or "DBus" in text:
        return KeychainUnavailable(
            "no usable OS keychain (headless Linux without a Secret Service?)",
            fix="start gnome-keyring or another Secret Service, " + _FIX_ENV,
        )
    return KeychainUnavailable(f"the keychain failed: {type(exc).__name__}: {text[:160]}",
                               fix=_FIX_ENV)


_TOKEN_PATTERNS = re.compile(
    # After "Authorization: Bearer" anything is a token; elsewhere "bearer" is only
    # followed by one when it looks like one (so "the bearer of" stays readable).
    r"(?i)((?:authorization[\"']?\s*[:=]\s*[\"']?bearer\s+)|bearer\s+(?=[A-Za-z0-9._~+/\-]{8,}))"
    r"[^\s\"',}]+"
    r"|\b(sk-[A-Za-z0-9_\-]{8,}|gsk_[A-Za-z0-9]{8,}|AIza[0-9A-Za-z_\-]{20,})"
    r"|((?:api[_-]?key|x-api-key|x-goog-api-key)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}&]+"
)


class Redactor:
    """Removes keys from any text bound for a log, a database row or the screen."""

    def __init__(self) -> None:
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def remember(self, secret: Secret) -> None:
        value = secret.reveal()
        if len(value) >= 6:
            with self._lock:
                self._known.add(value)

    def redact(self, text: str) -> str:
        for value in tuple(self._known):
            if value in text:
                text = text.replace(value, "***")
        return _TOKEN_PATTERNS.sub(_mask, text)


def _mask(match: re.Match[str]) -> str:
    if match.group(1):
        return match.group(1) + "***"
    if match.group(3):
        return match.group(3) + "***"
    return "***"


REDACTOR = Redactor()


class RedactingFilter(logging.Filter):
    """Logging filter: the formatted message leaves with every key masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg = REDACTOR.redact(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.exc_text = REDACTOR.redact(
                logging.Formatter().formatException(record.exc_info))
            record.exc_info = (record.exc_info[0], exc, None)
        return True
