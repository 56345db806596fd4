"""Output constraints: what we tell the model to return, and whether it did.

A step asks for text, code or JSON. Code and JSON get an instruction (and JSON mode where
the API has it); the answer is then checked. Models like to wrap answers in Markdown
fences, so a single fenced block is unwrapped rather than refused.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

INSTRUCTIONS = {
    "text": "",
    "code": "Reply with only the code. No explanation before or after it; if you use a "
            "Markdown code fence, use exactly one.",
    "json": "Reply with only one valid JSON document. No prose, no Markdown code fence.",
}

_FENCE = re.compile(r"^\s*```([A-Za-z0-9_+#.-]*)[^\n]*\n(.*?)\n?```\s*$", re.DOTALL)
_ANY_FENCE = re.compile(r"```([A-Za-z0-9_+#.-]*)[^\n]*\n(.*?)\n?```", re.DOTALL)

_EXTENSIONS = {
    "python": "py", "py": "py", "javascript": "js", "js": "js", "typescript": "ts",
    "ts": "ts", "tsx": "tsx", "jsx": "jsx", "rust": "rs", "rs": "rs", "go": "go",
    "java": "java", "kotlin": "kt", "c": "c", "cpp": "cpp", "c++": "cpp", "csharp": "cs",
    "cs": "cs", "ruby": "rb", "rb": "rb", "php": "php", "swift": "swift", "bash": "sh",
    "sh": "sh", "shell": "sh", "zsh": "sh", "sql": "sql", "html": "html", "css": "css",
    "yaml": "yaml", "yml": "yaml", "toml": "toml", "json": "json", "markdown": "md",
}


@dataclass(frozen=True, slots=True)
class Checked:
    ok: bool
    value: str  # what the step outputs: the unwrapped code, the JSON text, the text
    problem: str = ""
    extension: str = "md"


def check(output: str, text: str) -> Checked:
    if output == "json":
        return _check_json(text)
    if output == "code":
        return _check_code(text)
    if not text.strip():
        return Checked(False, text, "the answer is empty")
    return Checked(True, text, extension="md")


def repair_prompt(problem: str) -> str:
    return (f"That answer is not valid JSON ({problem}). Reply with only the corrected JSON "
            "document, nothing else.")


def _check_json(text: str) -> Checked:
    body = _unfence(text)[1]
    try:
        json.loads(body)
    except ValueError as exc:
        return Checked(False, text, f"invalid JSON: {exc}", "json")
    return Checked(True, body.strip(), extension="json")


def _check_code(text: str) -> Checked:
    language, body = _unfence(text)
    if language is None:
        fences = _ANY_FENCE.findall(text)
        if len(fences) == 1:  # prose around one block: keep the block
            language, body = fences[0]
        elif len(fences) > 1:
            return Checked(False, text, f"{len(fences)} code blocks where one was asked for",
                           "txt")
    if not body.strip():
        return Checked(False, text, "the answer has no code", "txt")
    extension = _EXTENSIONS.get((language or "").lower(), "txt")
    return Checked(True, body.rstrip() + "\n", extension=extension)


def _unfence(text: str) -> tuple[str | None, str]:
    match = _FENCE.match(text)
    if match is None or "```" in match.group(2):  # several blocks, not one wrapped answer
        return None, text
    return match.group(1), match.group(2)
