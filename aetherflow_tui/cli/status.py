"""`aetherflow status`, `probe`, and the operator's manual actions on the command line.

The manual actions (stop, resume, throttle, reset-circuits, optimise) are written to the
store; every live Aetherflow process (the cockpit, runs) applies them within a second and
acknowledges, and this command prints who did what.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..engine.errors import EXIT_FAILED, EXIT_LIMIT, UsageError
from ..formatting import ago, latency, percent, usd
from ..palette import LIGHT, SYSTEM
from .output import PROG, print_json

if TYPE_CHECKING:
    from ..engine import Engine
    from ..engine.health import ProbeResult, ProviderHealth
    from ..engine.store import CanarySpend



# -- status --------------------------------------------------------------------------------


async def status(engine: Engine, args: argparse.Namespace) -> int:
    from ..engine.regulator import Regulator, Sampler
    from ..engine.vigilance import ALIVE_WITHIN_S

    views = await engine.provider_views()
    store = engine.store
    now = engine.clock.now()
    # This process's own reading of the machine: one short sample, judged on its own.
    sampler = Sampler()
    await asyncio.sleep(0.5)  # cpu_percent needs an interval between two readings
    sample = sampler.sample(now)
    # Judged on its own (a window of one): the regulator waits for a full window.
    judged = Regulator(engine.bouquet.regulator.model_copy(update={"window": 1})
                       ).observe(sample)
    decisions = await store.decisions(1)
    processes = await store.processes(now - ALIVE_WITHIN_S)
    alerts = await store.alerts(8)
    canary = await store.canary_spend_by_provider(engine.prober.budget.day
                                                  or _day(engine))
    spend = await engine.spend_view()
    data: dict[str, Any] = {
        "ts": now,
        "machine": {"state": judged.state.value, "confidence": judged.confidence,
                    "reasoning": judged.reasoning, "sample": sample.to_dict()},
        "regulator": decisions[0] if decisions else None,
        "dispatch": {"held": engine.held is not None, "reason": engine.held},
        "mode": {"mode": engine.response_mode.value, "reason": engine.modes.reason,
                 "pinned": engine.modes.pinned is not None},
        "budget": {"day": spend.day, "spent_usd": spend.spent_usd,
                   "daily_usd": spend.budget_usd,
                   "canary_usd": sum(c.usd for c in canary.values()),
                   "canary_daily_usd": engine.bouquet.canary.daily_usd},
        "processes": processes,
        "providers": [_health_json(v.health, v.usable, canary.get(v.id)) for v in views],
        "alerts": alerts,
    }
    if args.json:
        print_json(data)
        return 0
    _print_status(engine, data, views)
    return 0


def _day(engine: Engine) -> str:
    from ..engine.clock import local_day

    return local_day(engine.clock.now())


def _health_json(health: ProviderHealth, usable: bool, canary: CanarySpend | None
                 ) -> dict[str, Any]:
    probe = health.canary
    status = health.status
    return {
        "provider": health.provider,
        "light": health.light.value if usable else "grey",
        "reason": health.reason if usable else "no usable key",
        "score": health.score,
        "circuit": health.circuit.value,
        "calls": health.calls,
        "success_pct": health.success_pct,
        "latency_p50_s": health.latency_p50_s,
        "latency_ewma_s": health.latency_ewma_s,
        "failures_in_row": health.failures_in_row,
        "canary": None if probe is None else {
            "ts": probe.ts, "model": probe.model, "ok": probe.ok, "reason": probe.reason,
            "latency_s": probe.latency_s, "ttft_s": probe.ttft_s, "usd": probe.usd},
        "canaries_today": {"count": canary.calls, "usd": canary.usd} if canary else None,
        "status_page": None if status is None else {
            "ts": status.ts, "level": status.level, "reason": status.reason,
            "read": status.ok},
        "models": [{"model": m.model, "calls": m.calls, "success_pct": m.success_pct,
                    "latency_ewma_s": m.latency_ewma_s, "score": m.score,
                    "canary_ok": None if m.canary is None else m.canary.ok}
                   for m in health.models],
    }


def _print_status(engine: Engine, data: dict[str, Any], views: list[Any]) -> None:
    console = Console(highlight=False)
    machine = data["machine"]
    sample = machine["sample"]
    state = machine["state"]
    line = Text("machine    ", style="bold")
    line.append(state.upper(), style=SYSTEM[state])
    line.append(f"  (confidence {machine['confidence']:.2f}, one sample, now) ")
    line.append(Text(machine["reasoning"], style="dim"))
    console.print(line)
    figures = [f"CPU {percent(sample.get('cpu_pct'))}",
               f"memory {percent(sample.get('memory_pct'))}",
               f"swap {percent(sample.get('swap_pct'))}"]
    if sample.get("load_per_core") is not None:
        figures.append(f"load {sample['load_per_core']:.2f}/core")
    if sample.get("temperature_c") is not None:
        figures.append(f"{sample['temperature_c']:.0f} °C")
    if sample.get("battery_pct") is not None:
        figures.append(f"battery {sample['battery_pct']:.0f}%"
                       + (" (on battery)" if sample.get("on_battery") else ""))
    console.print(Text("           " + "  ".join(figures)))
    decision = data["regulator"]
    if decision is not None:
        text = Text("regulator  ", style="bold")
        text.append(str(decision["state"]).upper(), style=SYSTEM.get(decision["state"], ""))
        text.append(f" since {_clock(decision['ts'])}, confidence "
                    f"{decision['confidence']:.2f}: ")
        text.append(Text(decision["reasoning"]))
        console.print(text)
        if decision["actions"]:
            console.print(Text("           actions: " + "; ".join(decision["actions"]),
                               style="dim"))
    dispatch = data["dispatch"]
    if dispatch["held"]:
        console.print(Text(f"dispatch   HELD: {dispatch['reason']} — `aetherflow resume` "
                           "lifts it", style="bold red"))
    else:
        console.print(Text("dispatch   running"))
    mode = data["mode"]
    console.print(Text(f"mode       {mode['mode'].upper()}"
                       + (" (pinned)" if mode["pinned"] else "") + f": {mode['reason']}"))
    budget = data["budget"]
    console.print(Text(f"budget     {usd(budget['spent_usd'])} of "
                       f"${budget['daily_usd']:g} today; canaries "
                       f"{usd(budget['canary_usd'])} of ${budget['canary_daily_usd']:g}"))
    live = ", ".join(f"{p['pid']} {p['role']}" for p in data["processes"]) or "none"
    console.print(Text(f"processes  {live}"))
    table = Table(title="Providers", title_justify="left", pad_edge=False, box=None)
    for column in ("", "provider", "score", "ok %", "p50", "canary", "status page",
                   "circuit", "why"):
        table.add_column(column, no_wrap=column not in ("why", "status page"),
                         overflow="fold")
    for row in data["providers"]:
        probe = row["canary"]
        status = row["status_page"]
        table.add_row(
            Text("●", style=LIGHT[row["light"]]),
            Text(row["provider"], style="bold"),
            "—" if row["score"] is None else f"{row['score']:.2f}",
            "—" if row["success_pct"] is None else f"{row['success_pct']:.0f}",
            latency(row["latency_p50_s"]),
            Text("—") if probe is None else Text(
                f"{'ok' if probe['ok'] else 'FAIL'} {latency(probe['latency_s'])} "
                f"{ago(data['ts'] - probe['ts'])}",
                style="" if probe["ok"] else "red"),
            Text("—" if status is None else status["level"]),
            row["circuit"],
            Text(row["reason"]),
        )
    console.print(table)
    if data["alerts"]:
        console.print(Text("Recent alerts", style="bold"))
        for alert in data["alerts"]:
            console.print(Text(f"  {_clock(alert['ts'])} {alert['severity']:<11} "
                               f"{alert['title']}: {alert['message']}"))


# -- probe ---------------------------------------------------------------------------------


async def probe(engine: Engine, args: argparse.Namespace) -> int:
    providers: list[str] = args.providers
    engine.check_dispatch()
    for provider in providers:
        engine.provider_spec(provider)  # unknown: exit 2
    started = time.perf_counter()
    results = await engine.probe(providers or None)
    pages = await engine.prober.read_all_status() if not providers else {}
    elapsed = time.perf_counter() - started
    failed = [r for r in results if not r.ok and not r.skipped]
    limited = [r for r in results if r.skipped and "budget" in r.reason]
    if args.json:
        print_json({"elapsed_s": elapsed, "probes": [_probe_json(r) for r in results],
                     "status_pages": {pid: {"level": s.level, "reason": s.reason,
                                            "read": s.ok} for pid, s in pages.items()},
                     "failed": len(failed)})
    else:
        _print_probes(results, pages, elapsed)
    if failed:
        return EXIT_FAILED
    return EXIT_LIMIT if limited else 0


def _probe_json(result: ProbeResult) -> dict[str, Any]:
    return {"provider": result.provider, "model": result.model, "ok": result.ok,
            "skipped": result.skipped, "reason": result.reason,
            "latency_s": result.latency_s, "ttft_s": result.ttft_s, "usd": result.usd}


def _print_probes(results: list[ProbeResult], pages: dict[str, Any], elapsed: float) -> None:
    console = Console(highlight=False)
    if not results:
        console.print(Text("no provider to probe: none has a tested key (add one with "
                           "`aetherflow key set PROVIDER`)", style="yellow"))
    else:
        table = Table(title=f"Canaries ({elapsed:.1f} s)", title_justify="left",
                      pad_edge=False, box=None)
        for column in ("provider", "model", "result", "latency", "TTFT", "cost", "why"):
            table.add_column(column, no_wrap=column != "why", overflow="fold")
        for r in results:
            word, style = (("skipped", "yellow") if r.skipped else
                           ("ok", "green") if r.ok else ("FAIL", "red"))
            table.add_row(Text(r.provider, style="bold"), Text(r.model), Text(word, style=style),
                          latency(r.latency_s), latency(r.ttft_s),
                          "—" if r.usd is None else usd(r.usd), Text(r.reason))
        console.print(table)
    for provider, signal in sorted(pages.items()):
        console.print(Text(f"status page  {provider}: {signal.level}: {signal.reason}",
                           style="" if signal.ok else "yellow"))


# -- manual actions ------------------------------------------------------------------------


async def stop(engine: Engine, args: argparse.Namespace) -> int:
    _confirm(args, "EMERGENCY STOP: cancel every run, stop local generation and hold all "
                   "dispatch until `aetherflow resume`?")
    reason = args.reason or "emergency stop from the command line"
    in_flight = await engine.runs_in_flight()  # in every live process
    code = await _control(engine, "emergency_stop", {"reason": reason},
                          f"emergency stop recorded: dispatch is held ({reason}); "
                          "`aetherflow resume` lifts it")
    stopped = await engine.wait_runs_stopped(in_flight)
    line = f"{len(stopped)} run(s) cancelled"
    if len(stopped) < len(in_flight):
        line += (f"; {len(in_flight) - len(stopped)} still running (its process did not "
                 "answer)")
    Console(highlight=False).print(Text(line))
    return code


async def resume(engine: Engine, args: argparse.Namespace) -> int:
    return await _control(engine, "resume", {}, "dispatch resumed")


async def throttle(engine: Engine, args: argparse.Namespace) -> int:
    limit = _limit(args.limit)
    done = ("throttle lifted" if limit is None
            else f"throttle recorded: at most {limit} call(s) in flight")
    return await _control(engine, "throttle", {"limit": limit}, done)


async def reset_circuits(engine: Engine, args: argparse.Namespace) -> int:
    if args.provider is None:
        _confirm(args, "Reset EVERY provider's circuit breaker? Real traffic may go to "
                       "providers that are failing until their probes say otherwise.")
    else:
        engine.provider_spec(args.provider)  # unknown provider: exit 2
    return await _control(engine, "reset_circuits", {"provider": args.provider},
                          f"circuit reset recorded for {args.provider or 'every provider'}")


async def optimise(engine: Engine, args: argparse.Namespace) -> int:
    return await _control(engine, "force_optimisation", {}, "force optimisation recorded")


# -- what the manual actions share ---------------------------------------------------------


async def _control(engine: Engine, action: str, params: dict[str, Any], done: str) -> int:
    live, acks = await engine.send_control(action, params)
    console = Console(highlight=False)
    console.print(Text(done))
    answered = {a["pid"] for a in acks}
    # A run that the control ended may have left the process table before its ack is read.
    roles = {p["pid"]: p["role"] for p in live}
    for ack in acks:
        role = ack.get("role") or roles.get(ack["pid"]) or "?"
        console.print(Text(f"  pid {ack['pid']} ({role}): {ack['detail']}"))
    for process in live:
        if process["pid"] not in answered:
            console.print(Text(f"  pid {process['pid']} ({process['role']}): no answer "
                               "within 3 s (it applies controls each second; is it stuck?)",
                               style="yellow"))
    if not live:
        persistent = action in ("emergency_stop", "resume")
        console.print(Text("  no live Aetherflow process" + (
            ": recorded for the next one to start" if persistent
            else ": nothing to apply it to"), style="dim"))
    return 0


def _confirm(args: argparse.Namespace, question: str) -> None:
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise UsageError("this action needs confirmation",
                         fix="pass --yes, or run it in a terminal to be asked")
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        print(f"{PROG}: not done", file=sys.stderr)
        raise SystemExit(EXIT_FAILED)


def _limit(text: str) -> int | None:
    if text.lower() in ("off", "none", "lift"):
        return None
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if limit < 1:
        raise UsageError(f"throttle limit {text!r} is not a positive whole number",
                         fix="give the most calls in flight, e.g. `aetherflow throttle 4`, "
                             "or `off`")
    return limit


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%H:%M:%S")
