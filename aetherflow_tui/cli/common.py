"""What more than one command checks the same way (the cockpit and `run` serve metrics)."""

from __future__ import annotations

import argparse
import sys

from .output import PROG


def check_metrics_port(args: argparse.Namespace) -> None:
    """--metrics-port must be a TCP port; a host beyond loopback is warned about."""
    from ..engine.errors import UsageError

    port = getattr(args, "metrics_port", None)
    if port is not None and not 0 < port < 65536:
        raise UsageError(f"--metrics-port {port} is not a TCP port",
                         fix="give a port from 1 to 65535, e.g. --metrics-port 9464")
    if port is not None:
        from ..engine.metrics import exposure_warning

        warning = exposure_warning(args.metrics_host)
        if warning is not None:
            print(f"{PROG}: {warning}", file=sys.stderr)
