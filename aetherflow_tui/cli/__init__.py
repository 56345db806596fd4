"""`aetherflow` on the command line: parse arguments, call the engine, render the answer.

Only argparse and the standard library load at start-up, so `aetherflow --help` is
instant; the engine, Rich and the heavy libraries load inside the command that needs them.
Each command's handler lives in a module of this package, named by the parser (parser.py).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .output import PROG
from .parser import BOUQUET, PATHS, Handler, build

__all__ = ["PROG", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = build()
    args = parser.parse_args(argv)
    import asyncio

    from ..engine.errors import EXIT_FAILED, OperatorError
    from ..engine.text import neutralise

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

        from ..engine.keys import REDACTOR

        print(REDACTOR.redact(traceback.format_exc()), file=sys.stderr, end="")
        print(f"{PROG}: internal error (above); please report it", file=sys.stderr)
        return EXIT_FAILED


async def _dispatch(args: argparse.Namespace) -> int:
    """Give the command's handler what it needs: the paths, the bouquet, or an engine."""
    from ..engine import paths as paths_mod

    handler: Handler = args.handler
    paths = paths_mod.resolve(getattr(args, "config", None), getattr(args, "home", None))
    if handler.needs == PATHS:
        return await _done(handler.load()(paths, args))

    from ..engine import Engine, load_bouquet

    bouquet = load_bouquet(paths)
    if handler.needs == BOUQUET:
        return await _done(handler.load()(bouquet, paths, args))
    engine = Engine(bouquet, paths.home)
    if not handler.start:
        return await _done(handler.load()(engine, args))
    async with engine:
        return await _done(handler.load()(engine, args))


async def _done(result: Any) -> int:
    """A handler's exit code, whether it is a plain or an async function."""
    if hasattr(result, "__await__"):
        result = await result
    return int(result)
