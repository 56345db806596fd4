"""The import rules written in pyproject.toml ([tool.importlinter]) hold: checked on every
test run, so a change that breaks the house fails CI, not a later reading."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT


def test_the_import_contracts_are_kept():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    done = subprocess.run([lint], capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " 0 broken" in done.stdout, done.stdout[-4000:]
