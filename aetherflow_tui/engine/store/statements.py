"""The writes other modules queue with Store.enqueue, and the column lists they follow.

Writes run in queue order, grouped by statement, so each statement owns its rows (see
Store.enqueue).
"""

from __future__ import annotations

_CALL_COLUMNS = (
    "ts, day, provider, model, purpose, ok, input_tokens, cached_input_tokens, output_tokens, "
    "usage_estimated, ttft_s, duration_s, tokens_per_s, usd, price_method, wh, gco2e, "
    "energy_method, error_kind, error, run_id, step_id"
)
_INSERT_CALL = f"INSERT INTO calls ({_CALL_COLUMNS}) VALUES ({', '.join('?' * 22)})"
_UPSERT_TOTALS = """
INSERT INTO daily_totals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (day, provider) DO UPDATE SET
    calls = calls + excluded.calls,
    failures = failures + excluded.failures,
    usd = usd + excluded.usd,
    unpriced_calls = unpriced_calls + excluded.unpriced_calls,
    input_tokens = input_tokens + excluded.input_tokens,
    output_tokens = output_tokens + excluded.output_tokens,
    wh = wh + excluded.wh,
    gco2e = gco2e + excluded.gco2e,
    measured_wh = measured_wh + excluded.measured_wh
"""

STEP_COLUMNS = ("run_id", "step_id", "status", "provider", "model", "attempts", "started",
                "finished", "output", "error", "type", "input_tokens", "output_tokens", "usd",
                "ttft_s", "duration_s", "reason", "flag", "extension")
UPSERT_STEP = (
    f"INSERT INTO steps ({', '.join(STEP_COLUMNS)}) VALUES ({', '.join('?' * len(STEP_COLUMNS))}) "
    "ON CONFLICT (run_id, step_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in STEP_COLUMNS[2:])
)
INSERT_MODE_CHANGE = "INSERT INTO mode_changes (ts, mode, reason, pinned) VALUES (?, ?, ?, ?)"
INSERT_HEALTH_SAMPLE = ("INSERT INTO health_samples (ts, provider, model, source, ok, latency_s, "
                        "ttft_s, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
INSERT_DECISION = ("INSERT INTO decisions (ts, kind, state, confidence, reasoning, metrics, "
                   "actions) VALUES (?, ?, ?, ?, ?, ?, ?)")
VEILLE_ITEM_COLUMNS = ("key", "title_key", "source", "title", "summary", "link", "published_ts",
                       "seen_ts", "label", "confidence", "prices")
INSERT_ALERT = ("INSERT INTO alerts (ts, severity, title, message, source) "
                "VALUES (?, ?, ?, ?, ?)")
INSERT_ROUTE = ("INSERT INTO routes (ts, run_id, step_id, attempt, provider, model, reason) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)")
