"""A model's size in billions of parameters, as its name states it ("llama-3.3-70b").

A leaf: the ledger (energy estimates) and the veille (offers compared by size) both read
sizes from names, with this one rule.
"""

from __future__ import annotations

import re

# A number (not the tail of a longer one), then "b" or "B" that no letter follows:
# "70b", "7B", "3.8b", "qwen2.5-coder:3b"; not "8bit" nor "4bpw".
_SIZE_IN_NAME = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*[bB](?![a-zA-Z])")


def params_b_in_name(name: str) -> float | None:
    """The largest size the name states, in billions; None when it states none.

    "llama-3.3-70b" is 70, "phi-3.8b" 3.8, "Qwen3-30B-A3B" 30 (the total, not the active
    3B); "mixtral-8x7b" reads as 7: the product of experts is not worked out.
    """
    sizes = [float(m) for m in _SIZE_IN_NAME.findall(name)]
    return max(sizes) if sizes else None
