"""`aetherflow` with no command: the cockpit, a Textual app on a started engine."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from .common import check_metrics_port
from .output import PROG

if TYPE_CHECKING:
    from ..engine.paths import Paths


async def handle(bouquet: Any, paths: Paths, args: argparse.Namespace) -> int:
    # Imported here, at call time: tests/support/crashing_cockpit.py replaces CockpitApp.
    from ..app import CockpitApp, check_keymap
    from ..engine import Engine
    from ..engine.errors import EXIT_FAILED

    check_keymap(bouquet.keymap)  # a typo in the keymap is exit 2 before the screen opens
    check_metrics_port(args)
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
