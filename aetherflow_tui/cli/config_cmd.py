"""`aetherflow config init|path`: write the default bouquet, or say where things live.

Neither reads the config: both work while it is broken or absent.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .output import print_json

if TYPE_CHECKING:
    from ..engine.paths import Paths


def init(paths: Paths, args: argparse.Namespace) -> int:
    from ..engine.config import default_text
    from ..engine.errors import UsageError

    if paths.config.exists() and not args.force:
        raise UsageError(f"{paths.config} already exists",
                         fix="edit it, or pass --force to overwrite it with the default")
    try:
        paths.config.parent.mkdir(parents=True, exist_ok=True)
        paths.config.write_text(default_text(), encoding="utf-8")
    except OSError as exc:  # e.g. a symlink loop, which exists() does not see
        raise UsageError(f"cannot write {paths.config}: {exc.strerror or exc}",
                         fix="give --config a path you can write") from None
    print(f"wrote {paths.config}")
    return 0


async def path(paths: Paths, args: argparse.Namespace) -> int:
    import asyncio

    from ..engine.keys import KeyVault

    backend = await asyncio.to_thread(KeyVault().backend_name)
    info = {
        "config": str(paths.config),
        "config_exists": paths.config.exists(),
        "home": str(paths.home),
        "database": str(paths.database),
        "keychain": backend,
    }
    if args.json:
        print_json(info)
        return 0
    state = "" if info["config_exists"] else "  (absent: the embedded default bouquet is used)"
    print(f"config    {info['config']}{state}")
    print(f"home      {info['home']}")
    print(f"database  {info['database']}")
    print(f"keychain  {backend}")
    return 0
