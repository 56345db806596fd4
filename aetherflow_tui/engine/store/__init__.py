"""The engine's SQLite file: WAL, versioned migrations, and one batching writer.

Calls are queued and written by a single writer task in batches, one transaction each,
so the call path never waits on the disk. A caller that must not report a result before
it is durable awaits the future `record_call` returns: it resolves after the commit.
WAL with synchronous=FULL means a kill -9 (or a power cut) loses no committed row.

When a commit fails (a full or failing disk, a lock held past the busy timeout), the writer
keeps the rows and tries again; meanwhile `failure` says why and `check_writable()` holds
every dispatch, so no call goes out that could not be recorded. After GIVE_UP_S of failing
(or at close) it gives up: the futures raise StoreUnavailable and `unrecorded_calls` counts
the call rows lost.

Today's totals come from `daily_totals`, kept up to date in the same transaction as the
calls, so the cockpit's once-a-second query reads a handful of rows, not the whole day.

The package: core.py (Store: open, close), base.py (the connection and its write
helpers), schema.py (DDL and migrations), statements.py (the SQL other modules enqueue),
rows.py (typed rows and the call row converters), writer.py (the batching writer), and one
mixin per area: calls.py, holdings.py, runs.py, vigilance.py, controls.py, veille.py.
"""

from .base import BUSY_TIMEOUT_MS
from .core import Store
from .holdings import CUT_BY_CRASH
from .rows import ApprovalRow, CanarySpend, KeyCheckRow, MinuteSpend, NonFiniteValue
from .schema import MIGRATIONS
from .statements import (
    INSERT_ALERT,
    INSERT_DECISION,
    INSERT_HEALTH_SAMPLE,
    INSERT_MODE_CHANGE,
    INSERT_ROUTE,
    STEP_COLUMNS,
    UPSERT_STEP,
    VEILLE_ITEM_COLUMNS,
)
from .writer import FIRST_RETRY_S, GIVE_UP_S, MAX_RETRY_S, Committed, Prepare

__all__ = [
    "BUSY_TIMEOUT_MS",
    "CUT_BY_CRASH",
    "FIRST_RETRY_S",
    "GIVE_UP_S",
    "INSERT_ALERT",
    "INSERT_DECISION",
    "INSERT_HEALTH_SAMPLE",
    "INSERT_MODE_CHANGE",
    "INSERT_ROUTE",
    "MAX_RETRY_S",
    "MIGRATIONS",
    "STEP_COLUMNS",
    "UPSERT_STEP",
    "VEILLE_ITEM_COLUMNS",
    "ApprovalRow",
    "CanarySpend",
    "Committed",
    "KeyCheckRow",
    "MinuteSpend",
    "NonFiniteValue",
    "Prepare",
    "Store",
]
