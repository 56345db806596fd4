"""`aetherflow` on the command line: parse arguments, call the engine, render the answer.

Only argparse and the standard library load at start-up, so `aetherflow --help` is
instant; the engine, Rich and the heavy libraries load inside the command that needs them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import Engine, ProviderView
    from .engine.paths import Paths

PROG = "aetherflow"


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, metavar="PATH",
                        help="bouquet config file (default: $AETHERFLOW_CONFIG, else the "
                             "platform config dir; see `aetherflow config path`)")
    common.add_argument("--home", type=Path, default=argparse.SUPPRESS, metavar="DIR",
                        help="data directory (default: $AETHERFLOW_HOME, else the platform "
                             "data dir)")
    json_flag = argparse.ArgumentParser(add_help=False)
    json_flag.add_argument("--json", action="store_true",
                           help="print one JSON document on stdout instead of tables")
    metrics = argparse.ArgumentParser(add_help=False)
    metrics.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                         help="serve Prometheus metrics (provider health, spend, energy, the "
                              "regulator) on this port while running")
    metrics.add_argument("--metrics-host", default="127.0.0.1", metavar="ADDR",
                         help="address for --metrics-port (default 127.0.0.1: loopback only)")
    confirm = argparse.ArgumentParser(add_help=False)
    confirm.add_argument("--yes", "-y", action="store_true",
                         help="do it without asking (needed when stdin is not a terminal)")

    parser = argparse.ArgumentParser(
        prog=PROG, parents=[common, metrics],
        description="Keep an AI factory running on a bouquet of LLM providers, at the best "
                    "price, inside hard spending limits. With no command, opens the cockpit.",
        epilog="Exit codes: 0 success, 1 the work ran but failed, 2 invalid input "
               "(config, arguments, keys), 3 stopped by a hard limit.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    commands.add_parser("providers", parents=[common, json_flag],
                        help="the bouquet: keys, prices per million tokens, zones")

    ask = commands.add_parser("ask", parents=[common, json_flag],
                              help="one call: print the answer, then its cost and energy")
    ask.add_argument("prompt", help="the question or instruction")
    ask.add_argument("--provider", "-p", help="provider id (default: the cheapest with a key)")
    ask.add_argument("--model", "-m", help="model id (default: the provider's chat model)")
    ask.add_argument("--max-tokens", type=int, default=None, metavar="N",
                     help="cap the answer's length")
    ask.add_argument("--no-stream", action="store_true", help="wait for the whole answer")

    commands.add_parser("spend", parents=[common, json_flag],
                        help="today's spend, tokens and energy per provider")

    plan = commands.add_parser("plan", help="validate a plan.json, or print its JSON Schema")
    plan_commands = plan.add_subparsers(dest="plan_command", metavar="ACTION", required=True)
    check = plan_commands.add_parser("check", parents=[common, json_flag],
                                     help="validate a plan: exit 0 if valid, 2 if not")
    check.add_argument("plan", type=Path, help="the plan file (plan.json)")
    plan_commands.add_parser("schema", help="print the plan's JSON Schema")

    run = commands.add_parser("run", parents=[common, json_flag, metrics],
                              help="execute a plan across the bouquet (Ctrl-C cancels)")
    run.add_argument("plan", type=Path, help="the plan file (plan.json)")
    run.add_argument("--mode", choices=("fast", "build", "double-check"), default=None,
                     help="fast: fastest healthy provider; build: each step type's rule "
                          "(default, or [routing] mode); double-check: build, then another "
                          "provider audits each result")
    run.add_argument("--output", "-o", type=Path, default=None, metavar="DIR",
                     help="write each step's output there (default: runs/RUN_ID in the data "
                          "dir)")
    run.add_argument("--resume", metavar="RUN_ID", default=None,
                     help="finish an earlier run of this plan: only unfinished steps run")
    run.add_argument("--response-mode", choices=("auto", "bouquet", "hybrid", "survival"),
                     default=None,
                     help="pin the response mode for this run: bouquet (APIs), hybrid "
                          "(local models take logic and QA), survival (local only); default "
                          "[modes] pin, auto: follow health and budget")

    commands.add_parser("runs", parents=[common, json_flag], help="recent runs and their status")

    commands.add_parser("status", parents=[common, json_flag],
                        help="the machine's state, dispatch, mode, budget, provider health, "
                             "alerts")
    probe = commands.add_parser("probe", parents=[common, json_flag],
                                help="run every canary now (and read the status pages)")
    probe.add_argument("providers", nargs="*", metavar="PROVIDER",
                       help="probe only these (default: every provider with a tested key)")
    stop = commands.add_parser("stop", parents=[common, confirm],
                               help="EMERGENCY STOP: cancel every run, stop local generation, "
                                    "hold all dispatch until `aetherflow resume`")
    stop.add_argument("--reason", default=None, help="recorded with the stop and its alert")
    commands.add_parser("resume", parents=[common],
                        help="lift an emergency stop: dispatch goes again")
    throttle = commands.add_parser("throttle", parents=[common],
                                   help="emergency throttle: cap calls in flight, in every "
                                        "live process, until `aetherflow throttle off`")
    throttle.add_argument("limit", metavar="LIMIT|off",
                          help="the most calls in flight at once, or off to lift it")
    reset = commands.add_parser("reset-circuits", parents=[common, confirm],
                                help="close circuit breakers: traffic may go again (each "
                                     "provider is probed at once)")
    reset.add_argument("provider", nargs="?", default=None,
                       help="one provider (default: all of them, after confirmation)")
    commands.add_parser("optimise", parents=[common],
                        help="force optimisation: lift the throttle, unload idle local "
                             "models, re-judge the machine now, re-probe unwell providers")

    veille = commands.add_parser("veille", help="the market watch: feeds, status pages, "
                                                "classified items, opportunities")
    veille_commands = veille.add_subparsers(dest="veille_command", metavar="ACTION",
                                            required=True)
    veille_commands.add_parser("poll", parents=[common, json_flag],
                               help="read every source now; classify and store what is new "
                                    "(exit 1 if a source failed)")
    classify = veille_commands.add_parser(
        "classify", parents=[common],
        help='classify stdin JSONL ({"title", "summary"} a line): label, confidence, prices')
    classify.add_argument("--jsonl", action="store_true",
                          help='print JSONL {"label", "confidence", "prices"}, one a line')
    veille_commands.add_parser("report", parents=[common, json_flag],
                               help="opportunities, price updates, the comparison matrix, "
                                    "the week's items, failing sources")
    add = veille_commands.add_parser("add", parents=[common, json_flag],
                                     help="watch a feed or status page (URL or local file), "
                                          "and poll it now")
    add.add_argument("where", metavar="FILE|URL")
    add.add_argument("--name", default=None, help="what to call it (default: host or file name)")
    add.add_argument("--kind", choices=("feed", "status"), default=None,
                     help="feed (RSS/Atom) or status (Statuspage JSON); default: status for "
                          ".json, else feed")
    add.add_argument("--provider", default=None, help="the provider it speaks about")
    remove = veille_commands.add_parser("remove", parents=[common],
                                        help="stop watching a source added with `veille add`")
    remove.add_argument("name")
    veille_commands.add_parser("sources", parents=[common, json_flag],
                               help="every source and its last poll")
    items = veille_commands.add_parser("items", parents=[common, json_flag],
                                       help="stored items, newest first")
    items.add_argument("--label", default=None, help="only this label")
    items.add_argument("--limit", type=int, default=50, metavar="N")

    report = commands.add_parser("report", parents=[common],
                                 help="a Markdown benchmark report of one run")
    report.add_argument("run_id", metavar="RUN_ID")
    report.add_argument("-o", "--output", type=Path, default=None, metavar="FILE",
                        help="write it to FILE instead of stdout")

    config = commands.add_parser("config", help="write or locate the config")
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION",
                                            required=True)
    init = config_commands.add_parser("init", parents=[common],
                                      help="write the default bouquet, commented, to edit")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    config_commands.add_parser("path", parents=[common, json_flag],
                               help="where the config, the data and the keys live")

    key = commands.add_parser("key", help="store or remove a provider's API key")
    key_commands = key.add_subparsers(dest="key_command", metavar="ACTION", required=True)
    key_set = key_commands.add_parser(
        "set", parents=[common],
        help="store a key in the OS keychain (read from a hidden prompt or stdin, never "
             "from the command line)")
    key_set.add_argument("provider")
    key_remove = key_commands.add_parser("remove", parents=[common],
                                         help="delete a key from the keychain")
    key_remove.add_argument("provider")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    import asyncio

    from .engine.errors import EXIT_FAILED, OperatorError
    from .engine.text import neutralise

    try:
        return asyncio.run(_dispatch(args))
    except OperatorError as exc:
        # The message may quote a plan or a config: their control characters stay inert.
        print(f"{PROG}: error: {neutralise(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception:
        import traceback

        from .engine.keys import REDACTOR

        print(REDACTOR.redact(traceback.format_exc()), file=sys.stderr, end="")
        print(f"{PROG}: internal error (above); please report it", file=sys.stderr)
        return EXIT_FAILED


async def _dispatch(args: argparse.Namespace) -> int:
    from .engine import paths as paths_mod

    paths = paths_mod.resolve(getattr(args, "config", None), getattr(args, "home", None))
    if args.command == "config":
        if args.config_command == "init":
            return _config_init(paths, args.force)
        return await _config_path(paths, args.json)

    if args.command == "plan" and args.plan_command == "schema":
        from .engine.plan import schema

        _print_json(schema())
        return 0

    from .engine import Engine, load_bouquet

    bouquet = load_bouquet(paths)
    if args.command is None:
        return await _cockpit(bouquet, paths, args)
    if args.command == "plan":
        return _plan_check(Engine(bouquet, paths.home), args)
    if args.command == "veille" and args.veille_command == "classify":
        from . import veille_view

        return await veille_view.classify(bouquet, args.jsonl)  # no database needed
    async with Engine(bouquet, paths.home) as engine:
        if args.command == "providers":
            return await _providers(engine, args.json)
        if args.command == "ask":
            return await _ask(engine, args)
        if args.command == "spend":
            return await _spend(engine, args.json)
        if args.command == "key":
            return await _key(engine, args)
        if args.command == "run":
            from .run_view import run_plan

            _check_metrics_port(args)
            return await run_plan(engine, args)
        if args.command in ("status", "probe", "stop", "resume", "throttle",
                            "reset-circuits", "optimise"):
            from . import status_view

            return await status_view.dispatch(engine, args)
        if args.command == "runs":
            return await _runs(engine, args.json)
        if args.command == "report":
            return await _report(engine, args)
        if args.command == "veille":
            from . import veille_view

            return await veille_view.dispatch(engine, args)
    raise AssertionError(args.command)


async def _cockpit(bouquet: Any, paths: Paths, args: argparse.Namespace) -> int:
    from .app import CockpitApp, check_keymap
    from .engine import Engine
    from .engine.errors import EXIT_FAILED

    check_keymap(bouquet.keymap)  # a typo in the keymap is exit 2 before the screen opens
    _check_metrics_port(args)
    engine = Engine(bouquet, paths.home)
    await engine.start()

    async def start_watch() -> None:
        if engine.vigilance is None:
            await engine.start_vigilance(role="cockpit")
        await engine.start_veille()

    try:
        if args.metrics_port is not None:
            # Before the screen opens, so a port in use is a one-line error, not a crash.
            await engine.start_vigilance(role="cockpit", metrics_port=args.metrics_port,
                                         metrics_host=args.metrics_host)
        # The rest (canaries, status pages, the regulator, the veille) starts once the
        # first frame is up: none of it is needed to paint the cockpit.
        app = CockpitApp(engine, keymap=bouquet.keymap, start_watch=start_watch)
        await app.run_async()
    finally:
        await engine.stop()
    if app.return_code:
        # Printed here, after Textual gave the terminal back: one line, the rest in the file.
        print(f"{PROG}: {app.crash_report or 'the cockpit failed'}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _check_metrics_port(args: argparse.Namespace) -> None:
    from .engine.errors import UsageError

    port = getattr(args, "metrics_port", None)
    if port is not None and not 0 < port < 65536:
        raise UsageError(f"--metrics-port {port} is not a TCP port",
                         fix="give a port from 1 to 65535, e.g. --metrics-port 9464")
    if port is not None:
        from .engine.metrics import exposure_warning

        warning = exposure_warning(args.metrics_host)
        if warning is not None:
            print(f"{PROG}: {warning}", file=sys.stderr)


def _config_init(paths: Paths, force: bool) -> int:
    from .engine.config import default_text
    from .engine.errors import UsageError

    if paths.config.exists() and not force:
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


async def _config_path(paths: Paths, as_json: bool) -> int:
    import asyncio

    from .engine.keys import KeyVault

    backend = await asyncio.to_thread(KeyVault().backend_name)
    info = {
        "config": str(paths.config),
        "config_exists": paths.config.exists(),
        "home": str(paths.home),
        "database": str(paths.database),
        "keychain": backend,
    }
    if as_json:
        _print_json(info)
        return 0
    state = "" if info["config_exists"] else "  (absent: the embedded default bouquet is used)"
    print(f"config    {info['config']}{state}")
    print(f"home      {info['home']}")
    print(f"database  {info['database']}")
    print(f"keychain  {backend}")
    return 0


async def _providers(engine: Engine, as_json: bool) -> int:
    views = await engine.provider_views()
    if as_json:
        _print_json({"config": engine.bouquet.source_label,
                     "providers": [_provider_json(v) for v in views]})
        return 0
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    wide = console.width >= 120  # roles and rate limits only where they fit
    table = Table(title=f"Bouquet — {engine.bouquet.source_label}", title_justify="left",
                  expand=False, pad_edge=False, box=box.SIMPLE_HEAD,
                  caption="in, out: $ per million tokens", caption_justify="left")
    table.add_column("provider", no_wrap=True, min_width=10)
    table.add_column("key", no_wrap=True, min_width=11)
    table.add_column("model", no_wrap=True, overflow="ellipsis", min_width=18, max_width=28)
    table.add_column("in", justify="right", no_wrap=True)
    table.add_column("out", justify="right", no_wrap=True)
    table.add_column("zone", no_wrap=True, min_width=4)
    if wide:
        table.add_column("limits", no_wrap=True)
        table.add_column("roles", style="dim")
    for view in views:
        for index, model in enumerate(view.models):
            first = index == 0
            cells = [
                Text(view.id, style="bold") if first else "",
                _key_text(view) if first else "",
                Text(model.id),
                _money(model.rates.input if model.rates else None),
                _money(model.rates.output if model.rates else None),
                view.zone if first else "",
            ]
            if wide:
                cells += [_limits(view) if first else "", Text(", ".join(model.roles))]
            table.add_row(*cells, end_section=index == len(view.models) - 1)
    console.print(table)
    details = {v.key.detail for v in views if v.key.detail and not v.usable}
    for detail in sorted(details):
        console.print(Text(f"• {detail}", style="dim"))
    return 0


def _key_text(view: ProviderView) -> Any:
    from rich.text import Text

    from .engine.keys import KeyState

    styles = {KeyState.PRESENT: "green", KeyState.NOT_NEEDED: "green",
              KeyState.MISSING: "yellow", KeyState.UNAVAILABLE: "red",
              KeyState.UNREADABLE: "red"}
    label = view.key.state.value
    if view.key.state is KeyState.PRESENT and view.key.source.startswith("env:"):
        label = f"present ({view.key.source})"
    return Text(label, style=styles[view.key.state])


def _money(value: float | None) -> Any:
    from rich.text import Text

    from .formatting import per_mtok

    if value is None:
        return Text("unpriced", style="bold red")
    return Text(per_mtok(value), justify="right")


def _limits(view: ProviderView) -> str:
    parts = []
    if view.rpm:
        parts.append(f"{view.rpm}rpm")
    if view.tpm:
        parts.append(f"{view.tpm // 1000}k tpm" if view.tpm >= 1000 else f"{view.tpm}tpm")
    return " ".join(parts)


def _provider_json(view: ProviderView) -> dict[str, Any]:
    return {
        "id": view.id,
        "kind": view.kind,
        "base_url": view.base_url,
        "zone": view.zone,
        "rpm": view.rpm,
        "tpm": view.tpm,
        "key": {"state": view.key.state.value, "source": view.key.source,
                "detail": view.key.detail},
        "console_url": view.console_url,
        "models": [
            {
                "id": m.id,
                "roles": list(m.roles),
                "priced": m.rates is not None,
                "usd_per_mtok_in": m.rates.input if m.rates else None,
                "usd_per_mtok_out": m.rates.output if m.rates else None,
                "usd_per_mtok_cached_in": m.rates.cached_input if m.rates else None,
                "price_source": m.rates.source if m.rates else None,
            }
            for m in view.models
        ],
    }


async def _ask(engine: Engine, args: argparse.Namespace) -> int:
    from .engine.errors import EXIT_FAILED, UsageError
    from .engine.text import neutralise

    if args.max_tokens is not None and args.max_tokens < 1:
        raise UsageError("--max-tokens must be at least 1")
    streamed = not args.no_stream and not args.json
    out = sys.stdout

    def show(token: str) -> None:
        out.write(neutralise(token))
        out.flush()

    outcome = await engine.ask(args.prompt, provider=args.provider, model=args.model,
                               max_tokens=args.max_tokens, stream=not args.no_stream,
                               on_token=show if streamed else None)
    record = outcome.record
    if args.json:
        _print_json({
            "ok": outcome.ok,
            "answer": outcome.result.text if outcome.result else None,
            "error": {"kind": outcome.error.kind, "message": record.error}
            if outcome.error else None,
            "call": _record_json(record),
        })
        return 0 if outcome.ok else EXIT_FAILED
    if outcome.result is not None:
        if not streamed:
            out.write(neutralise(outcome.result.text))
        out.write("\n")
    from rich.console import Console
    from rich.text import Text

    console = Console(stderr=not outcome.ok, highlight=False)
    if outcome.error is not None:
        console.print(Text(f"{PROG}: call failed: {record.error}", style="red"))
    console.print(Text(call_line(record), style="dim"))
    return 0 if outcome.ok else EXIT_FAILED


def call_line(record: Any) -> str:
    """provider · model · TTFT · duration · tokens · cost · energy, on one line."""
    from .formatting import significant, usd

    parts = [record.provider, record.model]
    if record.ttft_s is not None:
        parts.append(f"TTFT {record.ttft_s * 1000:.0f} ms")
    parts.append(f"{record.duration_s:.2f} s")
    tokens = f"{record.input_tokens}→{record.output_tokens} tok"
    if record.cached_input_tokens:
        tokens += f" ({record.cached_input_tokens} cached)"
    if record.usage_estimated:
        tokens += " (estimated)"
    parts.append(tokens)
    if record.tokens_per_s:
        parts.append(f"{record.tokens_per_s:.1f} tok/s")
    cost = record.cost
    parts.append(cost.method if cost.method == "not billed" else usd(cost.usd))
    energy = record.energy
    if energy is not None and energy.wh is not None:
        tag = "measured" if energy.measured else "est."
        parts.append(f"{significant(energy.wh)} Wh {tag}")
        if energy.gco2e is not None:
            parts.append(f"{significant(energy.gco2e)} gCO2e")
    else:
        parts.append("energy unknown")
    if record.ok and record.error:  # the usage the provider reported was out of bounds
        parts.append(record.error)
    return " · ".join(parts)


def _record_json(record: Any) -> dict[str, Any]:
    energy = record.energy
    return {
        "id": record.id,
        "ts": record.ts,
        "provider": record.provider,
        "model": record.model,
        "ok": record.ok,
        "ttft_s": record.ttft_s,
        "duration_s": record.duration_s,
        "tokens_per_s": record.tokens_per_s,
        "input_tokens": record.input_tokens,
        "cached_input_tokens": record.cached_input_tokens,
        "output_tokens": record.output_tokens,
        "usage_estimated": record.usage_estimated,
        "usd": record.cost.usd,
        "price_method": record.cost.method,
        "wh": energy.wh if energy else None,
        "gco2e": energy.gco2e if energy else None,
        "energy_method": energy.method if energy else None,
        "error_kind": record.error_kind,
    }


async def _spend(engine: Engine, as_json: bool) -> int:
    totals = await engine.totals_today()
    budget = engine.bouquet.budget.daily_usd
    spent = sum(t.usd for t in totals)
    if as_json:
        _print_json({
            "budget_usd": budget,
            "spent_usd": spent,
            "providers": [
                {"provider": t.provider, "day": t.day, "calls": t.calls, "failures": t.failures,
                 "usd": t.usd, "unpriced_calls": t.unpriced_calls,
                 "input_tokens": t.input_tokens, "output_tokens": t.output_tokens,
                 "wh": t.wh, "measured_wh": t.measured_wh, "gco2e": t.gco2e}
                for t in totals
            ],
        })
        return 0
    from rich.console import Console
    from rich.table import Table

    from .formatting import usd

    table = Table(title=f"Today: {usd(spent)} of ${budget:.2f}", title_justify="left")
    for column in ("provider", "calls", "failed", "$", "unpriced", "tokens in", "tokens out",
                   "Wh", "gCO2e"):
        table.add_column(column, justify="left" if column == "provider" else "right")
    for t in totals:
        table.add_row(t.provider, str(t.calls), str(t.failures), usd(t.usd).lstrip("$"),
                      str(t.unpriced_calls), str(t.input_tokens), str(t.output_tokens),
                      f"{t.wh:.3f}", f"{t.gco2e:.3f}")
    Console().print(table)
    return 0


async def _key(engine: Engine, args: argparse.Namespace) -> int:
    from .engine.errors import EXIT_FAILED

    provider = args.provider
    engine.provider_spec(provider)  # unknown provider: exit 2 before prompting
    if args.key_command == "remove":
        removed = await engine.remove_key(provider)
        print(f"removed the key for {provider}" if removed else f"no key stored for {provider}")
        return 0
    text = _read_secret(provider)
    await engine.set_key(provider, text)
    print(f"stored the key for {provider} in the keychain; testing it with one real call")
    # Running `key set` is the operator's approval: a key that passes is active at once.
    check = await engine.test_key(provider, activate=True)
    print(f"{provider}: {check.state.value}: {check.reason}")
    return 0 if check.active else EXIT_FAILED


def _plan_check(engine: Engine, args: argparse.Namespace) -> int:
    from .engine.text import neutralise

    plan = engine.load_plan(args.plan)
    edges = sum(len(s.depends_on) for s in plan.steps)
    if args.json:
        _print_json({"valid": True, "task_id": plan.task_id, "steps": len(plan.steps),
                     "dependencies": edges, "digest": plan.digest()})
    else:
        print(neutralise(f"{args.plan}: valid — {plan.task_id}: {len(plan.steps)} steps, "
                         f"{edges} dependencies"))
    return 0


async def _runs(engine: Engine, as_json: bool) -> int:
    rows = await engine.runs()
    if as_json:
        _print_json({"runs": rows})
        return 0
    from datetime import datetime

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from .engine.text import neutralise

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


async def _report(engine: Engine, args: argparse.Namespace) -> int:
    from .engine.report import markdown

    text = await markdown(engine.store, args.run_id)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        args.output.write_text(text, encoding="utf-8")
    except OSError as exc:
        from .engine.errors import UsageError

        raise UsageError(f"cannot write {args.output}: {exc.strerror}",
                         fix="pick a writable path with -o") from None
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _read_secret(provider: str) -> str:
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(f"API key for {provider} (hidden): ")
    return sys.stdin.readline()


def _print_json(data: Any) -> None:
    import re

    # json escapes C0 controls only; DEL and the C1 range (U+009B is a CSI to some
    # terminals) are escaped too. They occur only inside strings, so the value is unchanged.
    text = json.dumps(data, indent=2, ensure_ascii=False)
    text = re.sub(r"[\x7f-\x9f]", lambda m: f"\\u{ord(m.group()):04x}", text)
    sys.stdout.write(text + "\n")
