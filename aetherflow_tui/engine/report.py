"""`aetherflow report RUN_ID`: a Markdown benchmark of one run, from the store alone.

Per provider and per step type: count, success, p50/p95 TTFT and duration, tokens, cost;
then the parallelism the scheduler achieved, the run's wall time against the sum of its
calls' durations (what the same calls would take one after another).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from ..formatting import usd as money
from .errors import UsageError
from .records import CallRecord
from .store import Store
from .text import neutralise


async def markdown(store: Store, run_id: str, *, live_status: str | None = None) -> str:
    run = await store.run(run_id)
    if run is None:
        raise UsageError(f"no run {run_id!r} in {store.path}",
                         fix="list runs with `aetherflow runs`")
    steps = await store.steps(run_id)
    calls = await store.run_calls(run_id)
    return render(run, steps, calls, live_status or run["status"])


def render(run: dict[str, Any], steps: list[dict[str, Any]], calls: list[CallRecord],
           status: str) -> str:
    step_type = {s["step_id"]: s["type"] for s in steps}
    by_state: dict[str, int] = defaultdict(int)
    for s in steps:
        by_state[s["status"]] += 1
    finished = run["finished"]
    wall = (finished - run["started"]) if finished else None
    sequential = sum(c.duration_s for c in calls)
    usd = sum(c.cost.usd or 0.0 for c in calls)
    wh = sum((c.energy.wh or 0.0) for c in calls if c.energy)
    lines = [
        f"# Run {run['id']} — {neutralise(run['task_id'] or '')}",  # plan text: inert
        "",
        f"- plan: `{run['plan_path']}`",
        f"- mode: {run['mode']}; status: **{status}**"
        + (f" ({run['detail']})" if run.get("detail") else ""),
        f"- started {_when(run['started'])}"
        + (f", finished {_when(finished)}" if finished else ""),
        "- steps: " + ", ".join(f"{n} {state}" for state, n in sorted(by_state.items())),
        f"- calls: {len(calls)}, of which {sum(1 for c in calls if not c.ok)} failed; "
        f"cost {money(usd)}; energy {wh:.3f} Wh (estimated unless measured)",
        "",
        "## Parallelism",
        "",
    ]
    if wall and wall > 0:
        lines += [
            "| wall time | sum of call durations | parallelism |",
            "|---:|---:|---:|",
            f"| {wall:.2f} s | {sequential:.2f} s | {sequential / wall:.2f}× |",
            "",
            "The sum of call durations is what the same calls would take one after another; "
            "a resumed run's wall time includes the time between its sessions.",
        ]
    else:
        lines.append("The run has not finished: no wall time yet.")
    lines += ["", "## Per provider", ""]
    lines += _table("provider", _group(calls, lambda c: c.provider))
    lines += ["", "## Per step type", ""]
    lines += _table("step type", _group(calls, lambda c: step_type.get(c.step_id or "", "?")),
                    steps_by_key=_steps_by(steps, "type"))
    lines += ["", "## Steps", "",
              "| step | type | status | provider/model | attempts | duration | tokens in/out "
              "| cost | note |",
              "|---|---|---|---|---:|---:|---:|---:|---|"]
    for s in steps:
        who = f"{s['provider']}/{s['model']}" if s["provider"] else "—"
        duration = f"{s['duration_s']:.2f} s" if s["duration_s"] is not None else "—"
        note = s["flag"] or s["error"] or ""
        lines.append(f"| {_cell(s['step_id'])} | {s['type']} | {s['status']} | {_cell(who)} | "
                     f"{s['attempts']} | {duration} | {s['input_tokens']}/{s['output_tokens']} "
                     f"| {money(s['usd'])} | {_cell(note)} |")
    return "\n".join(lines) + "\n"


def _group(calls: Iterable[CallRecord], key: Any) -> dict[str, list[CallRecord]]:
    groups: dict[str, list[CallRecord]] = defaultdict(list)
    for call in calls:
        groups[key(call)].append(call)
    return dict(sorted(groups.items()))


def _steps_by(steps: list[dict[str, Any]], column: str) -> dict[str, tuple[int, int]]:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for s in steps:
        counts[s[column]][0] += 1
        counts[s[column]][1] += s["status"] == "done"
    return {k: (v[0], v[1]) for k, v in counts.items()}


def _table(label: str, groups: dict[str, list[CallRecord]],
           steps_by_key: dict[str, tuple[int, int]] | None = None) -> list[str]:
    if not groups:
        return ["No calls."]
    head = f"| {label} | calls | success | TTFT p50 | TTFT p95 | duration p50 | duration p95 "
    head += "| tokens in | tokens out | cost |"
    if steps_by_key is not None:
        head = head.replace("| calls |", "| steps done | calls |")
    rule = "|---" + "|---:" * (head.count("|") - 2) + "|"
    rows = [head, rule]
    for key, calls in groups.items():
        ok = [c for c in calls if c.ok]
        ttfts = sorted(c.ttft_s for c in ok if c.ttft_s is not None)
        durations = sorted(c.duration_s for c in ok)
        cells = [_cell(key)]
        if steps_by_key is not None:
            total, done = steps_by_key.get(key, (0, 0))
            cells.append(f"{done}/{total}")
        cells += [
            str(len(calls)), f"{100 * len(ok) / len(calls):.0f}%",
            _seconds(_pct(ttfts, 0.5)), _seconds(_pct(ttfts, 0.95)),
            _seconds(_pct(durations, 0.5)), _seconds(_pct(durations, 0.95)),
            str(sum(c.input_tokens for c in calls)), str(sum(c.output_tokens for c in calls)),
            money(sum(c.cost.usd or 0.0 for c in calls)),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _pct(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f} s"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _cell(text: str) -> str:
    """Provider text in a Markdown table cell: one line, no pipes, no markup surprises."""
    flat = " ".join(str(text).split())
    flat = flat.replace("|", "\\|").replace("<", "&lt;")
    return flat[:160] + ("…" if len(flat) > 160 else "")
