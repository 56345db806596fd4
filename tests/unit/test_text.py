"""Untrusted text made safe to store and show: no control sequence, no key, bounded length."""

from __future__ import annotations

import pytest

from aetherflow_tui.engine.text import excerpt, neutralise


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[31mred", "\\x1b[31mred"),
        ("bell\x07", "bell\\x07"),
        ("csi\x9b2J", "csi\\x9b2J"),
        ("\x1b]0;pwned title\x07after", "\\x1b]0;pwned title\\x07after"),
        ("nul\x00del\x7f", "nul\\x00del\\x7f"),
        ("back\rspace\x08", "back\\rspace\\x08"),
        ("tab\tand\nnewline kept", "tab\tand\nnewline kept"),
        ("plain [bold]markup[/] stays text", "plain [bold]markup[/] stays text"),
        ("café ✓", "café ✓"),
    ],
)
def test_neutralise_makes_control_sequences_visible(raw, shown):
    assert neutralise(raw) == shown


def test_neutralise_leaves_no_escape_or_c1_character():
    out = neutralise("\x1b[2J\x1b[H\x9b31m\x1bc\x90payload\x9c")

    assert not any(0x00 <= ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in out)


def test_excerpt_collapses_whitespace_to_one_line():
    assert excerpt("first line\n\n  second\tline\r\n") == "first line second line"


def test_excerpt_truncates_to_the_limit_with_an_ellipsis():
    out = excerpt("x" * 500, limit=50)

    assert len(out) == 50
    assert out == "x" * 49 + "…"


def test_excerpt_keeps_text_at_exactly_the_limit():
    assert excerpt("y" * 50, limit=50) == "y" * 50


def test_excerpt_default_limit_is_200():
    assert len(excerpt("z" * 1000)) == 200


def test_excerpt_masks_a_key():
    key = "sk-" + "excerpt0123456789abcdef"

    out = excerpt(f'{{"error": {{"message": "Incorrect API key provided: {key}"}}}}')

    assert key not in out
    assert "Incorrect API key provided: ***" in out


def test_excerpt_masks_a_key_split_across_lines_by_a_bearer_header():
    out = excerpt("headers:\nAuthorization: Bearer\n  abc123def456\nend")

    assert "abc123def456" not in out
    assert out == "headers: Authorization: Bearer *** end"


def test_excerpt_neutralises_escapes():
    out = excerpt("\x1b[31merror\x1b[0m: quota")

    assert "\x1b" not in out
    assert out == "\\x1b[31merror\\x1b[0m: quota"
