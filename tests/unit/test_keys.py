"""Keys: Secret never shows itself, the vault round-trips through a real keyring file backend,
status() explains what is missing and how to fix it, and redaction masks keys everywhere."""

from __future__ import annotations

import copy
import io
import logging
import pickle

import pytest
from keyring.backend import KeyringBackend
from keyring.errors import KeyringLocked, NoKeyringError
from keyrings.alt.file import PlaintextKeyring

from aetherflow_tui.engine import config
from aetherflow_tui.engine.keys import (
    REDACTOR,
    SERVICE,
    KeychainUnavailable,
    KeyState,
    KeyVault,
    RedactingFilter,
    Secret,
    UnreadableKey,
    check_key_text,
)
from tests.support.plans import bouquet_text, provider_table

GROQ_KEY = "gsk_" + "TestKey0123456789abcdefXYZ"  # split: not a real key

BOUQUET = config.parse(bouquet_text(
    provider_table("groq", "llama-3.3-70b-versatile", base_url="https://api.groq.com/openai/v1",
                   key="keyring"),
    provider_table("envprov", "m", base_url="https://env.example/v1", key="env:ENVPROV_API_KEY"),
    provider_table("ollama", "qwen2.5-coder:3b", base_url="http://127.0.0.1:11434/v1",
                   key="none")), None)
GROQ = BOUQUET.providers["groq"]
ENVPROV = BOUQUET.providers["envprov"]
OLLAMA = BOUQUET.providers["ollama"]


@pytest.fixture
def backend(tmp_path):
    ring = PlaintextKeyring()
    ring.file_path = str(tmp_path / "keyring_pass.cfg")
    return ring


@pytest.fixture
def vault(backend):
    return KeyVault(backend=backend, environ={})


class LockedKeychain(KeyringBackend):
    """A keychain that is locked, as the macOS login keychain is over SSH.

    It defines no priority, so keyring's own backend detection never picks it.
    """

    def get_password(self, service, username):
        raise KeyringLocked("Keyring is locked")

    def set_password(self, service, username, password):
        raise KeyringLocked("Keyring is locked")

    def delete_password(self, service, username):
        raise KeyringLocked("Keyring is locked")


class NoSecretService(KeyringBackend):
    """What keyring gives on headless Linux: every operation raises NoKeyringError."""

    def get_password(self, service, username):
        raise NoKeyringError("No recommended backend was available.")

    def set_password(self, service, username, password):
        raise NoKeyringError("No recommended backend was available.")

    def delete_password(self, service, username):
        raise NoKeyringError("No recommended backend was available.")


# --- Secret ---------------------------------------------------------------------------------


def test_secret_never_prints_its_value():
    secret = Secret(GROQ_KEY)

    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}", repr([secret]),
                  repr({"key": secret})):
        assert GROQ_KEY not in shown
        assert "***" in shown
    assert secret.reveal() == GROQ_KEY


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_secret_cannot_be_pickled(protocol):
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(Secret(GROQ_KEY), protocol=protocol)


def test_secret_cannot_be_copied_out_through_reduce():
    with pytest.raises(TypeError):
        copy.copy(Secret(GROQ_KEY))


def test_secret_has_no_instance_dict_to_leak():
    assert not hasattr(Secret(GROQ_KEY), "__dict__")


# --- check_key_text -----------------------------------------------------------------------


def test_check_key_text_accepts_a_key_and_strips_surrounding_whitespace():
    assert check_key_text("groq", f"  {GROQ_KEY}\n").reveal() == GROQ_KEY


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "is empty"),
        ("   \n\t", "is empty"),
        ("gsk_abc def", "spaces or line breaks"),
        ("gsk_abc\ndef", "spaces or line breaks"),
        ("gsk_abc\tdef", "spaces or line breaks"),
        ("gsk_abcdéf", "non-ASCII"),
        ("gsk_abc\u200bdef", "non-ASCII"),  # zero-width space, invisible when pasted
        ("gsk_abc\x07def", "control characters"),
    ],
)
def test_check_key_text_refuses_keys_that_cannot_be_a_header(text, reason):
    with pytest.raises(UnreadableKey) as info:
        check_key_text("groq", text)

    message = str(info.value)
    assert "the key for groq" in message
    assert reason in message
    assert info.value.fix


# --- KeyVault with a real keyring file backend ----------------------------------------------


def test_store_get_delete_round_trip_through_the_file_backend(vault, backend):
    vault.store("groq", Secret(GROQ_KEY))

    assert backend.get_password(SERVICE, "groq") == GROQ_KEY
    assert SERVICE == "aetherflow"
    got = vault.get(GROQ)
    assert isinstance(got, Secret)
    assert got.reveal() == GROQ_KEY

    assert vault.delete("groq") is True
    assert backend.get_password("aetherflow", "groq") is None
    assert vault.get(GROQ) is None


def test_store_writes_under_service_aetherflow_and_user_provider_id(vault, backend):
    vault.store("groq", Secret(GROQ_KEY))
    vault.store("mistral", Secret("mistral-key-0123456789"))

    assert backend.get_password("aetherflow", "groq") == GROQ_KEY
    assert backend.get_password("aetherflow", "mistral") == "mistral-key-0123456789"
    assert backend.get_password("other-service", "groq") is None


def test_a_second_vault_on_the_same_file_reads_the_stored_key(backend):
    KeyVault(backend=backend, environ={}).store("groq", Secret(GROQ_KEY))
    reopened = PlaintextKeyring()
    reopened.file_path = backend.file_path

    assert KeyVault(backend=reopened, environ={}).get(GROQ).reveal() == GROQ_KEY


def test_delete_of_an_absent_key_returns_false(vault):
    assert vault.delete("groq") is False


def test_backend_name_names_the_backend_class(vault):
    assert vault.backend_name() == "keyrings.alt.file.PlaintextKeyring"


def test_status_present_after_store(vault):
    vault.store("groq", Secret(GROQ_KEY))

    status = vault.status(GROQ)

    assert status.state is KeyState.PRESENT
    assert status.source == "keyring"
    assert status.detail is None


def test_status_missing_names_the_command_that_sets_it(vault):
    status = vault.status(GROQ)

    assert status.state is KeyState.MISSING
    assert status.source == "keyring"
    assert "aetherflow key set groq" in status.detail


def test_status_not_needed_for_keyless_provider():
    vault = KeyVault(backend=LockedKeychain(), environ={})  # never even asks the keychain

    status = vault.status(OLLAMA)

    assert status.state is KeyState.NOT_NEEDED
    assert status.source == "none"
    assert vault.get(OLLAMA) is None


def test_env_key_is_read_from_the_environ_mapping(backend):
    vault = KeyVault(backend=backend, environ={"ENVPROV_API_KEY": "sk-envkey0123456789"})

    assert vault.get(ENVPROV).reveal() == "sk-envkey0123456789"
    status = vault.status(ENVPROV)
    assert status.state is KeyState.PRESENT
    assert status.source == "env:ENVPROV_API_KEY"
    assert backend.get_password(SERVICE, "envprov") is None  # nothing copied to the keychain


@pytest.mark.parametrize("environ", [{}, {"ENVPROV_API_KEY": ""}, {"OTHER": "sk-x1234567890"}])
def test_env_key_absent_is_missing_with_an_export_hint(backend, environ):
    vault = KeyVault(backend=backend, environ=environ)

    status = vault.status(ENVPROV)

    assert status.state is KeyState.MISSING
    assert status.source == "env:ENVPROV_API_KEY"
    assert "export ENVPROV_API_KEY=" in status.detail
    assert vault.get(ENVPROV) is None


def test_env_key_with_a_line_break_inside_is_unreadable(backend):
    vault = KeyVault(backend=backend, environ={"ENVPROV_API_KEY": "sk-abc\ndef012345"})

    status = vault.status(ENVPROV)

    assert status.state is KeyState.UNREADABLE
    assert "environment variable ENVPROV_API_KEY" in status.detail


def test_keychain_entry_with_a_newline_is_unreadable(vault, backend):
    backend.set_password("aetherflow", "groq", "gsk_first\nsecond-line-0123")

    status = vault.status(GROQ)

    assert status.state is KeyState.UNREADABLE
    assert "the keychain" in status.detail
    assert "aetherflow key set groq" in status.detail
    assert "second-line" not in status.detail
    with pytest.raises(UnreadableKey):
        vault.get(GROQ)


def test_locked_keychain_is_unavailable_and_says_how_to_unlock():
    vault = KeyVault(backend=LockedKeychain(), environ={})

    status = vault.status(GROQ)

    assert status.state is KeyState.UNAVAILABLE
    assert "locked" in status.detail
    assert "security unlock-keychain" in status.detail
    assert "env:NAME" in status.detail


def test_locked_keychain_store_raises_keychain_unavailable():
    vault = KeyVault(backend=LockedKeychain(), environ={})

    with pytest.raises(KeychainUnavailable) as info:
        vault.store("groq", Secret(GROQ_KEY))

    assert "security unlock-keychain" in str(info.value)
    assert GROQ_KEY not in str(info.value)


def test_no_keyring_is_unavailable_and_names_secret_service_and_env():
    vault = KeyVault(backend=NoSecretService(), environ={})

    status = vault.status(GROQ)

    assert status.state is KeyState.UNAVAILABLE
    assert "Secret Service" in status.detail
    assert "env:NAME" in status.detail
    with pytest.raises(KeychainUnavailable):
        vault.delete("groq")


def test_env_keys_work_when_the_keychain_is_unavailable():
    vault = KeyVault(backend=NoSecretService(), environ={"ENVPROV_API_KEY": "sk-envkey0123456789"})

    assert vault.status(ENVPROV).state is KeyState.PRESENT


# --- redaction ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abc123def456ghi789", "abc123def456ghi789"),
        ("authorization: bearer abc123def456ghi789", "abc123def456ghi789"),
        ('{"error": "invalid key sk-proj-AbCdEf0123456789xyz"}', "sk-proj-AbCdEf0123456789xyz"),
        ("groq said gsk_" + "AbCdEf0123456789ABCDEF no", "gsk_" + "AbCdEf0123456789ABCDEF"),
        ("https://x/v1?key=AIzaSyA1234567890abcdefghijklmnop", "AIzaSyA1234567890abcdefghijklmnop"),
        ("api_key=s3cr3tvalue&model=x", "s3cr3tvalue"),
        ('{"api-key": "s3cr3tvalue"}', "s3cr3tvalue"),
        ("x-api-key: s3cr3tvalue", "s3cr3tvalue"),
        ("X-Goog-Api-Key: s3cr3tvalue", "s3cr3tvalue"),
    ],
)
def test_redact_masks_key_patterns(text, secret):
    redacted = REDACTOR.redact(text)

    assert secret not in redacted
    assert "***" in redacted


def test_redact_keeps_the_label_and_the_rest_of_the_text():
    assert REDACTOR.redact("Authorization: Bearer abc123 sent") == "Authorization: Bearer *** sent"
    assert REDACTOR.redact("api_key=abc&model=gpt") == "api_key=***&model=gpt"
    assert REDACTOR.redact("nothing secret here") == "nothing secret here"


def test_redact_masks_a_remembered_secret_with_no_known_shape():
    odd = "zq9-unusual-vendor-key-7731"
    assert odd in REDACTOR.redact(f"failed with {odd}")  # no pattern matches it yet

    REDACTOR.remember(Secret(odd))

    assert REDACTOR.redact(f"failed with {odd}!") == "failed with ***!"


def test_vault_get_remembers_the_key_for_redaction(vault, backend):
    odd = "vault-remembered-key-4419"
    backend.set_password("aetherflow", "groq", odd)

    vault.get(GROQ)

    assert odd not in REDACTOR.redact(f"error body echoing {odd}")


def _logger_with_stream(name: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.filters = []
    logger.addFilter(RedactingFilter())
    return logger, stream


def test_redacting_filter_masks_keys_in_message_args():
    logger, stream = _logger_with_stream("aetherflow.test.redact.args")

    logger.info("calling %s with %s", "groq", f"Authorization: Bearer {GROQ_KEY}")

    out = stream.getvalue()
    assert GROQ_KEY not in out
    assert "calling groq with Authorization: Bearer ***" in out


def test_redacting_filter_masks_keys_in_exception_tracebacks():
    logger, stream = _logger_with_stream("aetherflow.test.redact.exc")
    key = "sk-" + "traceback0123456789abcdef"

    try:
        raise RuntimeError("provider rejected " + key)
    except RuntimeError:
        logger.exception("call failed for %s", key)

    out = stream.getvalue()
    assert key not in out
    assert "Traceback (most recent call last)" in out
    assert "RuntimeError: provider rejected ***" in out
    assert "call failed for ***" in out
