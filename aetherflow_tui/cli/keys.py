"""`aetherflow key set|remove`: a provider's API key in the OS keychain."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..engine import Engine


async def set_key(engine: Engine, args: argparse.Namespace) -> int:
    from ..engine.errors import EXIT_FAILED

    provider = args.provider
    engine.provider_spec(provider)  # unknown provider: exit 2 before prompting
    text = _read_secret(provider)
    await engine.set_key(provider, text)
    print(f"stored the key for {provider} in the keychain; testing it with one real call")
    # Running `key set` is the operator's approval: a key that passes is active at once.
    check = await engine.test_key(provider, activate=True)
    print(f"{provider}: {check.state.value}: {check.reason}")
    return 0 if check.active else EXIT_FAILED


async def remove_key(engine: Engine, args: argparse.Namespace) -> int:
    provider = args.provider
    engine.provider_spec(provider)  # unknown provider: exit 2
    removed = await engine.remove_key(provider)
    print(f"removed the key for {provider}" if removed else f"no key stored for {provider}")
    return 0


def _read_secret(provider: str) -> str:
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(f"API key for {provider} (hidden): ")
    return sys.stdin.readline()
