"""What the commands print with: the program's name, JSON on stdout, and the money cell
of the price tables.

Rich loads inside the helpers that need it, never at import: the parser imports this module.
"""

from __future__ import annotations

import sys
from typing import Any

PROG = "aetherflow"


def print_json(data: Any) -> None:
    """One JSON document on stdout, indented, with every terminal control escaped."""
    import json
    import re

    # json escapes C0 controls only; DEL and the C1 range (U+009B is a CSI to some
    # terminals) are escaped too. They occur only inside strings, so the value is unchanged.
    text = json.dumps(data, indent=2, ensure_ascii=False)
    text = re.sub(r"[\x7f-\x9f]", lambda m: f"\\u{ord(m.group()):04x}", text)
    sys.stdout.write(text + "\n")


def rate(value: float | None) -> Any:
    """A $/million-token rate as a table cell: right-aligned, or "unpriced" in bold red."""
    from rich.text import Text

    from ..formatting import per_mtok

    if value is None:
        return Text("unpriced", style="bold red")
    return Text(per_mtok(value), justify="right")
