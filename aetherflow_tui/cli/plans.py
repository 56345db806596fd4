"""Plans: `aetherflow run` (start a plan, show it live, summarise it, pick the exit code),
`plan check`, `plan schema`, `runs` and `report`.

On a terminal the run's steps table refreshes in place; otherwise one line is printed per
finished step. Ctrl-C cancels the run (in-flight calls are cancelled and recorded) and
prints how to resume it. Rich loads in the functions that draw: `plan check` and
`plan schema` do without it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import TYPE_CHECKING, Any

from ..engine.events import ResponseModeChanged, RunUpdated, StepUpdated
from ..engine.progress import RunStatus, RunView, StepState, StepView
from ..engine.scheduler import run_summary
from ..engine.text import neutralise
from ..formatting import usd
from ..palette import STEP, run_style
from .common import check_metrics_port
from .output import print_json

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

    from ..engine import Engine, PlanRun
    from ..engine.paths import Paths

_ORDER = {StepState.RUNNING: 0, StepState.WAITING: 0, StepState.FAILED: 1,
          StepState.CANCELLED: 2, StepState.DONE: 3, StepState.SKIPPED: 4, StepState.PENDING: 5}


async def run_plan(engine: Engine, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.text import Text

    check_metrics_port(args)
    # soft_wrap: the run id and the resume command stay on one line, to copy or grep.
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    subscription = engine.bus.subscribe()
    if args.response_mode is not None:
        engine.pin_mode(None if args.response_mode == "auto" else args.response_mode)
    run = await engine.start_run(args.plan, mode=args.mode, resume=args.resume,
                                 output_dir=args.output)
    # The run watches its providers (one whose traffic failed is probed back in) and its
    # machine (the regulator), from now until the process ends.
    await engine.start_vigilance(role="run", canaries="recovery", status_pages=False,
                                 metrics_port=args.metrics_port,
                                 metrics_host=args.metrics_host)
    first = run.view()
    verb = "resuming" if args.resume else "started"
    # What an earlier execution did, not what this one finished while vigilance started.
    done = f" ({run.restored} already done)" if args.resume else ""
    modes = engine.modes
    err.print(Text(f"run {run.run_id} {verb}: {neutralise(first.task_id)}, {first.total} steps"
                   f"{done}, mode {first.mode}, "
                   f"{modes.mode.value.upper()} ({modes.reason}); outputs in "
                   f"{run.output_dir}", style="dim"))
    interrupted = False
    watcher = asyncio.create_task(_watch(run, subscription, args.json))
    try:
        view = await run.wait()
    except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels us; cancel the run
        interrupted = True
        run.cancel()
        view = await run.wait()
    finally:
        subscription.close()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    steps = run.steps()
    if args.json:
        summary = run_summary(view, steps)
        modes = engine.modes
        summary["response_mode"] = {"mode": modes.mode.value, "reason": modes.reason,
                                    "pinned": modes.pinned is not None}
        for item in summary["steps"]:
            state = StepState(item["status"])
            item["output_file"] = (str(run.output_dir / f"{item['id']}.{run.extension(item['id'])}")
                                   if state is StepState.DONE and run.output_dir else None)
        print_json(summary)
    else:
        console = Console(highlight=False)
        console.print(_table(view, steps, limit=None))
        console.print(_headline(view))
    if view.status is not RunStatus.DONE:
        if view.status in (RunStatus.BUDGET, RunStatus.HELD, RunStatus.CANCELLED) \
                or view.pending:
            err.print(Text(f"resume with: aetherflow run {args.plan} --resume {run.run_id}",
                           style="dim"))
        if view.detail:
            err.print(Text(view.detail, style="yellow"))
    if interrupted:
        return 130
    return view.status.exit_code


def _mode_line(event: ResponseModeChanged) -> Text:
    from rich.text import Text

    return Text(f"response mode {event.mode.upper()}: {event.reason}", style="yellow")


async def _watch(run: PlanRun, subscription: Any, as_json: bool) -> None:
    """Keep the operator informed while the run goes: a live table, or a line per step."""
    from rich.console import Console, Group
    from rich.live import Live

    if as_json:
        async for _ in subscription:
            pass
        return
    if not sys.stdout.isatty():
        console = Console(highlight=False)
        async for event in subscription:
            if (isinstance(event, StepUpdated) and event.run_id == run.run_id
                    and event.step.state not in (StepState.PENDING, StepState.RUNNING)):
                console.print(_step_line(event.step), soft_wrap=True)
            elif isinstance(event, ResponseModeChanged):
                console.print(_mode_line(event), soft_wrap=True)
        return
    console = Console(highlight=False)
    with Live(console=console, refresh_per_second=4, transient=True) as live:
        shown = 0.0
        async for event in subscription:
            if isinstance(event, ResponseModeChanged):
                live.console.print(_mode_line(event), soft_wrap=True)
                continue
            if not isinstance(event, StepUpdated | RunUpdated):
                continue
            now = time.monotonic()
            if now - shown < 0.25:  # four frames a second is plenty to read
                continue
            shown = now
            height = max(5, console.height - 4)
            live.update(Group(_headline(run.view()), _table(run.view(), run.steps(),
                                                            limit=height)))


def _headline(view: RunView) -> Text:
    from rich.text import Text

    finished = view.done + view.failed + view.skipped
    parts = [f"run {view.run_id}", view.mode, f"{finished}/{view.total} finished",
             f"{view.done} done"]
    if view.failed:
        parts.append(f"{view.failed} failed")
    if view.skipped:
        parts.append(f"{view.skipped} skipped")
    if view.running:
        parts.append(f"{view.running} running")
    parts.append(usd(view.usd))
    if view.eta_s is not None:
        parts.append(f"ETA {view.eta_s:.0f} s")
    if view.status is not RunStatus.RUNNING:
        parts.append(view.status.value)
    return Text(" · ".join(parts), style=run_style(view.status))


def _table(view: RunView, steps: list[StepView], *, limit: int | None) -> Table:
    from rich.table import Table
    from rich.text import Text

    now = time.time()
    table = Table(box=None, pad_edge=False, show_edge=False)
    for column, justify in (("", "left"), ("step", "left"), ("type", "left"),
                            ("provider/model", "left"), ("elapsed", "right"),
                            ("tokens", "right"), ("cost", "right"), ("TTFT", "right")):
        table.add_column(column, justify=justify, no_wrap=True,  # type: ignore[arg-type]
                         overflow="ellipsis", max_width=40 if column == "provider/model" else None)
    rows = steps
    if limit is not None and len(rows) > limit:
        rows = sorted(rows, key=lambda s: _ORDER[s.state])[:limit]
    for step in rows:
        style = STEP[step.state]
        elapsed = step.elapsed(now)
        who = f"{step.provider}/{step.model}" if step.provider else ""
        if step.state is StepState.WAITING:
            who = "waiting for budget"
        tokens = f"{step.input_tokens}→{step.output_tokens}" if step.attempts else ""
        table.add_row(
            Text(step.state.glyph, style=style), Text(step.step_id, style=style),
            step.type, Text(who), f"{elapsed:.1f} s" if elapsed is not None else "",
            tokens, usd(step.usd) if step.attempts else "",
            f"{step.ttft_s * 1000:.0f} ms" if step.ttft_s is not None else "",
        )
    return table


def _step_line(step: StepView) -> Text:
    from rich.text import Text

    who = f" {step.provider}/{step.model}" if step.provider else ""
    line = f"{step.state.glyph} {step.step_id} ({step.type}){who}"
    if step.duration_s is not None and step.state is StepState.DONE:
        line += f" · {step.duration_s:.2f} s · {step.input_tokens}→{step.output_tokens} tok"
        line += f" · {usd(step.usd)}"
    if step.error:
        line += f" · {step.error}"
    if step.flag:
        line += f" · flagged: {step.flag}"
    return Text(line, style=STEP[step.state])


# -- plan check, plan schema ---------------------------------------------------------------


def check(engine: Engine, args: argparse.Namespace) -> int:
    plan = engine.load_plan(args.plan)
    edges = sum(len(s.depends_on) for s in plan.steps)
    if args.json:
        print_json({"valid": True, "task_id": plan.task_id, "steps": len(plan.steps),
                    "dependencies": edges, "digest": plan.digest()})
    else:
        print(neutralise(f"{args.plan}: valid — {plan.task_id}: {len(plan.steps)} steps, "
                         f"{edges} dependencies"))
    return 0


def schema(paths: Paths, args: argparse.Namespace) -> int:
    from ..engine.plan import schema as plan_schema

    print_json(plan_schema())
    return 0


# -- runs, report --------------------------------------------------------------------------


async def runs(engine: Engine, args: argparse.Namespace) -> int:
    rows = await engine.runs()
    if args.json:
        print_json({"runs": rows})
        return 0
    from datetime import datetime

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Recent runs", title_justify="left")
    for column in ("run", "task", "mode", "status", "started", "plan"):
        table.add_column(column, no_wrap=column != "plan", overflow="fold")
    for row in rows:
        started = datetime.fromtimestamp(row["started"]).strftime("%m-%d %H:%M")
        # Text, not str: a task id of "[bold]" is shown as written, not as Rich markup.
        table.add_row(row["id"], Text(neutralise(row["task_id"] or "")), row["mode"] or "",
                      row["status"], started, Text(neutralise(row["plan_path"] or "")))
    Console(highlight=False).print(table)
    return 0


async def report(engine: Engine, args: argparse.Namespace) -> int:
    from ..engine.report import markdown

    text = await markdown(engine.store, args.run_id)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        args.output.write_text(text, encoding="utf-8")
    except OSError as exc:
        from ..engine.errors import UsageError

        raise UsageError(f"cannot write {args.output}: {exc.strerror}",
                         fix="pick a writable path with -o") from None
    print(f"wrote {args.output}", file=sys.stderr)
    return 0
