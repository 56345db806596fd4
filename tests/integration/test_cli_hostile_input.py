"""Hostile files and values through the real `aetherflow` command, as an operator runs it.

Special files, huge, infinite or deeply nested configs and plans are one line and exit 2
(plan text full of terminal escapes: test_cli_plan_text.py). Each child has a timeout (a
FIFO must not hang it) and a capped address space (reading /dev/zero or a huge file whole
must fail loudly, not swap the machine).
"""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path

import pytest

from tests.conftest import aetherflow_cmd
from tests.support.plans import bouquet, provider, step, user_text, write_plan

MEMORY_CAP = 2 << 30  # bytes of address space for the child: ample for the CLI, not for 4 GB


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def run(env: dict[str, str], *args: str | Path, timeout: float = 30
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*aetherflow_cmd(), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout, preexec_fn=_cap_memory)


def one_line_error(done: subprocess.CompletedProcess[str], *parts: str) -> str:
    error = done.stderr.strip()
    assert done.returncode == 2, done.stderr
    assert "\n" not in error and "Traceback" not in error, error
    assert error.startswith("aetherflow: error: "), error
    for part in parts:
        assert part in error, error
    return error


def special(kind: str, where: Path) -> Path:
    """A path that is no small regular file: /dev/zero, a FIFO, a symlink loop, 4 GB sparse."""
    if kind == "dev_zero":
        return Path("/dev/zero")
    path = where / f"special-{kind}"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink_loop":
        os.symlink(path, path)
    elif kind == "sparse_4gb":
        with path.open("wb") as file:
            file.write(b"head\n")
            file.truncate(4 << 30)  # nothing on disk; whole, it would be 4 GB in memory
    return path


FILE_REASONS = {
    "dev_zero": "is a character device, not a regular file",
    "fifo": "is a FIFO, not a regular file",
    "symlink_loop": "Too many levels of symbolic links",
    "sparse_4gb": "4,294,967,296 bytes, over the",
}


# -- special files ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(FILE_REASONS))
def test_a_config_that_is_a_special_file_is_one_line_exit_2(cli_env, tmp_path, kind):
    path = special(kind, tmp_path)
    done = run(cli_env, "providers", "--config", path)
    one_line_error(done, f"{path}: ", FILE_REASONS[kind])


def test_a_config_named_by_the_environment_is_read_bounded_too(cli_env, tmp_path):
    cli_env["AETHERFLOW_CONFIG"] = str(special("fifo", tmp_path))
    one_line_error(run(cli_env, "providers"), FILE_REASONS["fifo"])


def test_a_named_config_that_does_not_exist_is_still_not_found(cli_env, tmp_path):
    done = run(cli_env, "providers", "--config", tmp_path / "none.toml")
    one_line_error(done, "none.toml: config file not found", "aetherflow config init")


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("kind", list(FILE_REASONS))
def test_a_plan_that_is_a_special_file_is_one_line_exit_2(cli_env, tmp_path, kind, command):
    path = special(kind, tmp_path)
    args = ("plan", "check", path) if command == "check" else ("run", path)
    done = run(cli_env, *args)
    one_line_error(done, FILE_REASONS[kind])


@pytest.mark.parametrize(("kind", "reason"), [
    ("fifo", "context file 'special-fifo' is not a regular file"),
    ("symlink_loop", "context file 'special-symlink_loop' is a symlink loop"),
])
def test_a_context_file_that_is_a_special_file_is_one_line_exit_2(cli_env, tmp_path, kind,
                                                                  reason):
    special(kind, tmp_path)
    plan = write_plan(tmp_path / "plan.json", step("a", "x", context_files=[f"special-{kind}"]))
    for args in (("plan", "check", plan), ("run", plan)):
        one_line_error(run(cli_env, *args), f"{plan}:", 'steps[0] "a".context_files[0]', reason)


def test_dev_zero_as_a_context_file_is_outside_the_plan_folder(cli_env, tmp_path):
    (tmp_path / "zero").symlink_to("/dev/zero")
    plan = write_plan(tmp_path / "plan.json", step("a", "x", context_files=["zero", ]))
    one_line_error(run(cli_env, "plan", "check", plan), "context file 'zero' is outside")


def test_a_4_gb_context_file_sends_only_its_first_256_kb(cli_env, configure, server, tmp_path):
    configure(bouquet(provider("alpha", server.url)))
    special("sparse_4gb", tmp_path)
    plan = write_plan(tmp_path / "plan.json",
                      step("a", "@@say@@ SAY: ok", context_files=["special-sparse_4gb"]))
    done = run(cli_env, "run", plan, "--json", timeout=60)
    assert done.returncode == 0, done.stderr
    (request,) = server.requests
    sent = user_text(request)
    start = sent.index("head\n")
    assert sent[start:].index("\n```\n") == 256 * 1024  # the file's part, cut at 256 KB


# -- values and nesting that broke the parser or the store ----------------------------------


@pytest.mark.parametrize(("swap", "where"), [
    (("price_in = 0.1", "price_in = inf"), "price_in: must be a finite number"),
    (("daily_usd = 10.0", "daily_usd = inf"), "budget.daily_usd: must be a finite number"),
    (("max_usd_per_request = 1.0", "max_usd_per_request = inf"), "max_usd_per_request: must"),
    (("max_usd_per_1k_tokens = 1.0", "max_usd_per_1k_tokens = nan"), "max_usd_per_1k_tokens"),
])
def test_inf_or_nan_in_the_config_is_one_line_exit_2_and_no_run(cli_env, configure, server,
                                                               tmp_path, swap, where):
    text = bouquet(provider("alpha", server.url))
    assert swap[0] in text
    path = configure(text.replace(swap[0], swap[1]))
    plan = write_plan(tmp_path / "plan.json", step("a", "x"))
    done = run(cli_env, "run", plan)
    one_line_error(done, f"{path}:", where, "inf or nan")
    assert server.requests == []


def test_inf_price_and_inf_budget_together_no_longer_reach_the_store(cli_env, configure,
                                                                    server, tmp_path):
    # The reported crash: NOT NULL constraint failed: daily_totals.usd, from inf * 0 = NaN.
    text = bouquet(provider("alpha", server.url)).replace("price_in = 0.1", "price_in = inf")
    configure(text.replace("daily_usd = 10.0", "daily_usd = inf"))
    done = run(cli_env, "run", write_plan(tmp_path / "plan.json", step("a", "x")))
    error = one_line_error(done, "must be a finite number")
    assert "IntegrityError" not in error


@pytest.mark.parametrize("nested", ["[" * 5000 + "]" * 5000,
                                    "{a = " * 5000 + "1" + "}" * 5000], ids=["array", "table"])
def test_deeply_nested_toml_is_one_line_exit_2(cli_env, configure, nested):
    path = configure(f"[budget]\nx = {nested}\n")
    one_line_error(run(cli_env, "providers"), f"{path}: malformed TOML: ", "nested too deeply")


@pytest.mark.parametrize("nested", ["[" * 100_000 + "]" * 100_000,
                                    '{"a": ' * 900 + "1" + "}" * 900], ids=["array", "object"])
def test_deeply_nested_plan_json_is_one_line_exit_2(cli_env, tmp_path, nested):
    plan = tmp_path / "plan.json"
    plan.write_text(nested)
    for args in (("plan", "check", plan), ("run", plan)):
        one_line_error(run(cli_env, *args), "nested more than 32 deep")


def test_config_init_onto_a_symlink_loop_is_one_line_exit_2(cli_env, tmp_path):
    path = special("symlink_loop", tmp_path)
    done = run(cli_env, "config", "init", "--config", path)
    one_line_error(done, f"cannot write {path}: Too many levels of symbolic links")
