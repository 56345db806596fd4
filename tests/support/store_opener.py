"""A process that opens the store the moment it reads a line on stdin, then exits.

tests/integration/test_store.py starts several, waits until each has imported everything
(it prints READY), then releases them together: a barrier, so they race on the schema.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from aetherflow_tui.engine.store import Store


async def main(path: Path) -> None:
    print("READY", flush=True)
    sys.stdin.readline()
    store = await Store.open(path)
    print(await store.schema_version(), flush=True)
    await store.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
