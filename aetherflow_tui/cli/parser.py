"""The `aetherflow` argument parser, and which handler each command runs.

Each command names its handler with `set_defaults(handler=Handler(...))`: a module of this
package and a function in it, imported only when the command runs, so that building the
parser (and `aetherflow --help`) loads argparse and nothing heavy.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NamedTuple

from .output import PROG

# What a handler is called with, and so what runs before it.
PATHS = "paths"  # handler(paths, args): no config is read (config init/path, plan schema)
BOUQUET = "bouquet"  # handler(bouquet, paths, args): the config is read, no engine is made
ENGINE = "engine"  # handler(engine, args)


class Handler(NamedTuple):  # not a dataclass: `dataclasses` costs --help ~10 ms to import
    """The function that runs a command: `function` in aetherflow_tui.cli.`module`."""

    module: str
    function: str = "handle"
    needs: str = ENGINE
    start: bool = True  # with ENGINE: start the engine (open the store) around the call

    def load(self) -> Any:
        from importlib import import_module

        return getattr(import_module(f"{__package__}.{self.module}"), self.function)


def build() -> argparse.ArgumentParser:
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
    # No command: the cockpit. A command's own default replaces this one.
    parser.set_defaults(handler=Handler("cockpit", needs=BOUQUET))
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    commands.add_parser("providers", parents=[common, json_flag],
                        help="the bouquet: keys, prices per million tokens, zones"
                        ).set_defaults(handler=Handler("providers"))

    ask = commands.add_parser("ask", parents=[common, json_flag],
                              help="one call: print the answer, then its cost and energy")
    ask.add_argument("prompt", help="the question or instruction")
    ask.add_argument("--provider", "-p", help="provider id (default: the cheapest with a key)")
    ask.add_argument("--model", "-m", help="model id (default: the provider's chat model)")
    ask.add_argument("--max-tokens", type=int, default=None, metavar="N",
                     help="cap the answer's length")
    ask.add_argument("--no-stream", action="store_true", help="wait for the whole answer")
    ask.set_defaults(handler=Handler("ask"))

    commands.add_parser("spend", parents=[common, json_flag],
                        help="today's spend, tokens and energy per provider"
                        ).set_defaults(handler=Handler("spend"))

    plan = commands.add_parser("plan", help="validate a plan.json, or print its JSON Schema")
    plan_commands = plan.add_subparsers(dest="plan_command", metavar="ACTION", required=True)
    check = plan_commands.add_parser("check", parents=[common, json_flag],
                                     help="validate a plan: exit 0 if valid, 2 if not")
    check.add_argument("plan", type=Path, help="the plan file (plan.json)")
    # The engine reads the plan against the bouquet; it opens no store.
    check.set_defaults(handler=Handler("plans", "check", start=False))
    plan_commands.add_parser("schema", help="print the plan's JSON Schema"
                             ).set_defaults(handler=Handler("plans", "schema", needs=PATHS))

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
    run.set_defaults(handler=Handler("plans", "run_plan"))

    commands.add_parser("runs", parents=[common, json_flag], help="recent runs and their status"
                        ).set_defaults(handler=Handler("plans", "runs"))

    commands.add_parser("status", parents=[common, json_flag],
                        help="the machine's state, dispatch, mode, budget, provider health, "
                             "alerts").set_defaults(handler=Handler("status", "status"))
    probe = commands.add_parser("probe", parents=[common, json_flag],
                                help="run every canary now (and read the status pages)")
    probe.add_argument("providers", nargs="*", metavar="PROVIDER",
                       help="probe only these (default: every provider with a tested key)")
    probe.set_defaults(handler=Handler("status", "probe"))
    stop = commands.add_parser("stop", parents=[common, confirm],
                               help="EMERGENCY STOP: cancel every run, stop local generation, "
                                    "hold all dispatch until `aetherflow resume`")
    stop.add_argument("--reason", default=None, help="recorded with the stop and its alert")
    stop.set_defaults(handler=Handler("status", "stop"))
    commands.add_parser("resume", parents=[common],
                        help="lift an emergency stop: dispatch goes again"
                        ).set_defaults(handler=Handler("status", "resume"))
    throttle = commands.add_parser("throttle", parents=[common],
                                   help="emergency throttle: cap calls in flight, in every "
                                        "live process, until `aetherflow throttle off`")
    throttle.add_argument("limit", metavar="LIMIT|off",
                          help="the most calls in flight at once, or off to lift it")
    throttle.set_defaults(handler=Handler("status", "throttle"))
    reset = commands.add_parser("reset-circuits", parents=[common, confirm],
                                help="close circuit breakers: traffic may go again (each "
                                     "provider is probed at once)")
    reset.add_argument("provider", nargs="?", default=None,
                       help="one provider (default: all of them, after confirmation)")
    reset.set_defaults(handler=Handler("status", "reset_circuits"))
    commands.add_parser("optimise", parents=[common],
                        help="force optimisation: lift the throttle, unload idle local "
                             "models, re-judge the machine now, re-probe unwell providers"
                        ).set_defaults(handler=Handler("status", "optimise"))

    veille = commands.add_parser("veille", help="the market watch: feeds, status pages, "
                                                "classified items, opportunities")
    veille_commands = veille.add_subparsers(dest="veille_command", metavar="ACTION",
                                            required=True)
    veille_commands.add_parser("poll", parents=[common, json_flag],
                               help="read every source now; classify and store what is new "
                                    "(exit 1 if a source failed)"
                               ).set_defaults(handler=Handler("veille", "poll"))
    classify = veille_commands.add_parser(
        "classify", parents=[common],
        help='classify stdin JSONL ({"title", "summary"} a line): label, confidence, prices')
    classify.add_argument("--jsonl", action="store_true",
                          help='print JSONL {"label", "confidence", "prices"}, one a line')
    # The classifier and the bouquet's catalogue only: no database needed.
    classify.set_defaults(handler=Handler("veille", "classify", needs=BOUQUET))
    veille_commands.add_parser("report", parents=[common, json_flag],
                               help="opportunities, price updates, the comparison matrix, "
                                    "the week's items, failing sources"
                               ).set_defaults(handler=Handler("veille", "report"))
    add = veille_commands.add_parser("add", parents=[common, json_flag],
                                     help="watch a feed or status page (URL or local file), "
                                          "and poll it now")
    add.add_argument("where", metavar="FILE|URL")
    add.add_argument("--name", default=None, help="what to call it (default: host or file name)")
    add.add_argument("--kind", choices=("feed", "status"), default=None,
                     help="feed (RSS/Atom) or status (Statuspage JSON); default: status for "
                          ".json, else feed")
    add.add_argument("--provider", default=None, help="the provider it speaks about")
    add.set_defaults(handler=Handler("veille", "add"))
    remove = veille_commands.add_parser("remove", parents=[common],
                                        help="stop watching a source added with `veille add`")
    remove.add_argument("name")
    remove.set_defaults(handler=Handler("veille", "remove"))
    veille_commands.add_parser("sources", parents=[common, json_flag],
                               help="every source and its last poll"
                               ).set_defaults(handler=Handler("veille", "sources"))
    items = veille_commands.add_parser("items", parents=[common, json_flag],
                                       help="stored items, newest first")
    items.add_argument("--label", default=None, help="only this label")
    items.add_argument("--limit", type=int, default=50, metavar="N")
    items.set_defaults(handler=Handler("veille", "items"))

    report = commands.add_parser("report", parents=[common],
                                 help="a Markdown benchmark report of one run")
    report.add_argument("run_id", metavar="RUN_ID")
    report.add_argument("-o", "--output", type=Path, default=None, metavar="FILE",
                        help="write it to FILE instead of stdout")
    report.set_defaults(handler=Handler("plans", "report"))

    config = commands.add_parser("config", help="write or locate the config")
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION",
                                            required=True)
    init = config_commands.add_parser("init", parents=[common],
                                      help="write the default bouquet, commented, to edit")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(handler=Handler("config_cmd", "init", needs=PATHS))
    config_commands.add_parser("path", parents=[common, json_flag],
                               help="where the config, the data and the keys live"
                               ).set_defaults(handler=Handler("config_cmd", "path", needs=PATHS))

    key = commands.add_parser("key", help="store or remove a provider's API key")
    key_commands = key.add_subparsers(dest="key_command", metavar="ACTION", required=True)
    key_set = key_commands.add_parser(
        "set", parents=[common],
        help="store a key in the OS keychain (read from a hidden prompt or stdin, never "
             "from the command line)")
    key_set.add_argument("provider")
    key_set.set_defaults(handler=Handler("keys", "set_key"))
    key_remove = key_commands.add_parser("remove", parents=[common],
                                         help="delete a key from the keychain")
    key_remove.add_argument("provider")
    key_remove.set_defaults(handler=Handler("keys", "remove_key"))
    return parser
