"""The model size a name states: one rule for the ledger's energy estimate and the veille."""

from __future__ import annotations

import pytest

from aetherflow_tui.engine.model_size import params_b_in_name


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("llama-3.3-70b-versatile", 70),
        ("Llama 3.3 70B", 70),
        ("qwen2.5-coder:3b", 3),
        ("Qwen/Qwen2.5-Coder-7B-Instruct", 7),
        ("phi-3.8b", 3.8),
        ("mixtral-8x7b", 7),  # the expert's size: the product is not worked out
        ("Qwen3-30B-A3B", 30),  # the largest size stated: the total, not the active part
        ("llama-3.2-1b-distilled-from-70b", 70),
        ("llama-8bit", None),
        ("gpt-4o-mini", None),
        ("deepseek-chat", None),
        ("", None),
    ],
)
def test_params_b_in_name(name, size):
    assert params_b_in_name(name) == size
