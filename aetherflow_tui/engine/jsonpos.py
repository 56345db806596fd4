"""Where a value sits in a JSON text: (path) -> line, for errors that point into a file.

The json module keeps no positions, so `lines()` walks the text once with a small scanner
and records the line where each value starts, keyed by its path, e.g. ("steps", 2, "id").
It assumes the text already parsed with json.loads; on anything odd it simply stops.
"""

from __future__ import annotations

import contextlib
import re

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_SCALAR = re.compile(r"-?[0-9][0-9.eE+-]*|true|false|null")
_SPACE = re.compile(r"[ \t\r\n]*")

Path = tuple[str | int, ...]


def lines(text: str) -> dict[Path, int]:
    found: dict[Path, int] = {}
    scanner = _Scanner(text, found)
    with contextlib.suppress(IndexError, ValueError):  # partial positions still help
        scanner.value(())
    return found


def line_of(positions: dict[Path, int], path: Path) -> int | None:
    """The line of path, else of its nearest ancestor that has one."""
    for end in range(len(path), -1, -1):
        line = positions.get(path[:end])
        if line is not None:
            return line
    return None


class _Scanner:
    def __init__(self, text: str, found: dict[Path, int]) -> None:
        self.text = text
        self.at = 0
        self.found = found
        self._line = 1  # the line at offset _counted: counting from 0 each time is quadratic
        self._counted = 0

    def skip(self) -> None:
        self.at = _SPACE.match(self.text, self.at).end()  # type: ignore[union-attr]

    def line(self) -> int:
        self._line += self.text.count("\n", self._counted, self.at)
        self._counted = self.at
        return self._line

    def value(self, path: Path) -> None:
        self.skip()
        self.found[path] = self.line()
        char = self.text[self.at]
        if char == "{":
            self.at += 1
            self.skip()
            if self.text[self.at] == "}":
                self.at += 1
                return
            while True:
                self.skip()
                key = self.string()
                self.skip()
                if self.text[self.at] != ":":
                    raise ValueError("expected ':'")
                self.at += 1
                self.value((*path, key))
                self.skip()
                char = self.text[self.at]
                self.at += 1
                if char == "}":
                    return
        elif char == "[":
            self.at += 1
            self.skip()
            if self.text[self.at] == "]":
                self.at += 1
                return
            index = 0
            while True:
                self.value((*path, index))
                index += 1
                self.skip()
                char = self.text[self.at]
                self.at += 1
                if char == "]":
                    return
        elif char == '"':
            self.string()
        else:
            match = _SCALAR.match(self.text, self.at)
            if match is None:
                raise ValueError("unexpected character")
            self.at = match.end()

    def string(self) -> str:
        import json

        match = _STRING.match(self.text, self.at)
        if match is None:
            raise ValueError("expected a string")
        self.at = match.end()
        return json.loads(match.group())
