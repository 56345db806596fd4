"""A process that writes call rows as fast as it can and prints each committed id.

tests/integration/test_store.py kills it with SIGKILL mid-write and checks that every id
it printed is in the database, and that the database is still readable.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from aetherflow_tui.engine.clock import local_day
from aetherflow_tui.engine.ledger import Cost, Energy
from aetherflow_tui.engine.records import CallRecord
from aetherflow_tui.engine.store import Store


async def main(path: Path) -> None:
    store = await Store.open(path, max_batch=64)
    while True:
        now = time.time()
        futures = [
            store.record_call(CallRecord(
                ts=now, day=local_day(now), provider=f"p{i % 3}", model="m", purpose="test",
                ok=True, input_tokens=10, output_tokens=5, duration_s=0.1,
                cost=Cost(0.001, "config"), energy=Energy(0.01, 0.002, "ecologits"),
            ))
            for i in range(50)
        ]
        for row in await asyncio.gather(*futures):
            sys.stdout.write(f"{row.id}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
