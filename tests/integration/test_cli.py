"""The real `aetherflow` command in a subprocess: exit codes, one-line errors, JSON output."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import TEST_KEY, aetherflow_cmd
from tests.support.plans import bouquet_text, model_entry, provider_table, scripted_bouquet
from tests.support.scripted_server import ScriptedServer


def run(env: dict[str, str], *args: str, stdin: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*aetherflow_cmd(), *args], capture_output=True, text=True,
                          env=env, input=stdin, timeout=60)


@pytest.fixture
def scripted_config(tmp_path: Path, scripted, cli_env) -> Path:
    path = tmp_path / "bouquet.toml"
    path.write_text(scripted_bouquet(scripted.url))
    cli_env["AETHERFLOW_CONFIG"] = str(path)
    return path


def test_providers_on_the_embedded_default(cli_env):
    done = run(cli_env, "providers", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["config"] == "embedded default"
    ids = [p["id"] for p in data["providers"]]
    assert ids == ["groq", "mistral", "codestral", "deepseek", "gemini", "openai", "openrouter",
                   "local"]
    local = data["providers"][-1]
    assert local["kind"] == "llama_cpp" and local["key"]["state"] == "not needed"
    assert local["models"][0]["usd_per_mtok_in"] == 0
    groq = data["providers"][0]
    assert groq["key"]["state"] == "missing"
    assert groq["models"][0]["usd_per_mtok_in"] == pytest.approx(0.59)
    assert groq["zone"] == "USA"


def test_providers_table_for_people(cli_env):
    done = run(cli_env, "providers")
    assert done.returncode == 0, done.stderr
    assert "groq" in done.stdout and "llama-3.3-70b-versatile" in done.stdout
    assert "missing" in done.stdout


def test_config_init_then_path(cli_env, tmp_path):
    target = tmp_path / "conf" / "bouquet.toml"
    done = run(cli_env, "config", "init", "--config", str(target))
    assert done.returncode == 0, done.stderr
    assert target.read_text().startswith("# Aetherflow bouquet")
    again = run(cli_env, "config", "init", "--config", str(target))
    assert again.returncode == 2
    assert "already exists" in again.stderr and "--force" in again.stderr
    cli_env["AETHERFLOW_CONFIG"] = str(target)
    where = json.loads(run(cli_env, "config", "path", "--json").stdout)
    assert where["config"] == str(target) and where["config_exists"] is True
    assert where["home"] == cli_env["AETHERFLOW_HOME"]
    listed = json.loads(run(cli_env, "providers", "--json").stdout)
    assert listed["config"] == str(target)


@pytest.mark.parametrize(
    ("body", "line", "reason"),
    [
        ('[budget]\ndaily_usd = 5\n[providers.x\nkind = "openai"\n', 3, "malformed TOML"),
        ('[providers.x]\nkind = "grpc"\nbase_url = "http://h"\n[[providers.x.models]]\n'
         'id = "m"\n', 2, "unknown provider kind 'grpc'"),
        ('[providers.x]\nkind = "openai"\nbase_url = "ftp://h"\n[[providers.x.models]]\n'
         'id = "m"\n', 3, "not an http(s) URL"),
        ('[providers.x]\nkind = "openai"\nbase_url = "http://h"\n', 1, "models is required"),
        ('[providers.x]\nkind = "openai"\nbase_url = "http://h"\n[[providers.x.models]]\n'
         'id = "m"\nprice_in = -1\n', 6, "greater than or equal to 0"),
    ],
)
def test_bad_config_is_exit_2_with_file_and_line(cli_env, tmp_path, body, line, reason):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    done = run(cli_env, "providers", "--config", str(path))
    assert done.returncode == 2
    message = done.stderr.strip()
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith(f"aetherflow: error: {path}:{line}: ")
    assert reason in message


def test_a_named_config_that_does_not_exist_is_exit_2(cli_env, tmp_path):
    done = run(cli_env, "providers", "--config", str(tmp_path / "nope.toml"))
    assert done.returncode == 2
    assert "config file not found" in done.stderr and "config init" in done.stderr


def test_key_set_then_ask(cli_env, scripted_config, scripted, tmp_path):
    stored = run(cli_env, "key", "set", "scripted", stdin=TEST_KEY + "\n")
    assert stored.returncode == 0, stored.stderr
    assert "scripted: active: authenticated in" in stored.stdout
    done = run(cli_env, "ask", "hello factory", "--provider", "scripted")
    assert done.returncode == 0, done.stderr
    answer, line = done.stdout.strip().splitlines()
    assert answer == "echo: hello factory"
    assert line.startswith("scripted · echo · TTFT ")
    assert "2→3 tok" in line and "$0.0000055" in line and "Wh est." in line
    as_json = json.loads(run(cli_env, "ask", "hi", "-p", "scripted", "--json").stdout)
    assert as_json["ok"] is True and as_json["answer"] == "echo: hi"
    assert as_json["call"]["energy_method"] == "estimate:size"
    assert as_json["call"]["usd"] == pytest.approx((1 * 0.5 + 2 * 1.5) / 1e6)
    # The key is never printed, and never written under the data dir.
    for output in (stored, done):
        assert TEST_KEY not in output.stdout + output.stderr
    for path in Path(cli_env["AETHERFLOW_HOME"]).rglob("*"):
        assert TEST_KEY.encode() not in path.read_bytes()


def test_spend_after_a_call(cli_env, scripted_config):
    run(cli_env, "key", "set", "scripted", stdin=TEST_KEY)
    assert run(cli_env, "ask", "a b c", "-p", "scripted").returncode == 0
    spend = json.loads(run(cli_env, "spend", "--json").stdout)
    assert spend["budget_usd"] == 1.0
    (row,) = spend["providers"]
    # The key's sandbox test is a real call too, and is counted like one.
    assert row["provider"] == "scripted" and row["calls"] == 2 and row["usd"] > 0


def test_spend_shows_small_costs_in_significant_figures(cli_env, scripted_config):
    from aetherflow_tui.formatting import usd

    run(cli_env, "key", "set", "scripted", stdin=TEST_KEY)
    assert run(cli_env, "ask", "a b c", "-p", "scripted").returncode == 0
    spent = json.loads(run(cli_env, "spend", "--json").stdout)["spent_usd"]
    assert 0 < spent < 0.0001  # a few tokens at $0.5 and $1.5 a million
    table = run(cli_env, "spend")
    assert table.returncode == 0, table.stderr
    assert not re.search(r"0\.0000(?!\d)", table.stdout)  # never a bare $0.0000
    assert f"Today: {usd(spent)} of $1.00" in table.stdout


def test_a_failing_provider_is_exit_1(cli_env, scripted_config):
    run(cli_env, "key", "set", "scripted", stdin=TEST_KEY)
    done = run(cli_env, "ask", "hi", "-p", "scripted", "-m", "status:503")
    assert done.returncode == 1
    assert "overloaded" not in done.stdout
    assert "the provider is failing (HTTP 503)" in done.stderr


def test_a_wrong_key_is_exit_1_and_stays_secret(cli_env, scripted_config):
    wrong = "sk-wrong-00112233445566778899"
    stored = run(cli_env, "key", "set", "scripted", stdin=wrong)
    assert stored.returncode == 1
    assert "scripted: failed: the key was refused" in stored.stdout
    done = run(cli_env, "ask", "hi", "-p", "scripted", "--json")
    assert done.returncode == 1
    data = json.loads(done.stdout)
    assert data["error"]["kind"] == "auth"
    assert wrong not in done.stdout + done.stderr


def test_no_key_is_exit_2_with_the_fix(cli_env, scripted_config):
    done = run(cli_env, "ask", "hi", "-p", "scripted")
    assert done.returncode == 2
    assert "no key for scripted" in done.stderr and "aetherflow key set scripted" in done.stderr


def test_an_unreadable_env_key_is_exit_2(cli_env, tmp_path, scripted):
    path = tmp_path / "env.toml"
    path.write_text(scripted_bouquet(scripted.url, key="env:SCRIPTED_KEY"))
    cli_env["SCRIPTED_KEY"] = "sk-has a space"
    done = run(cli_env, "ask", "hi", "-p", "scripted", "--config", str(path))
    assert done.returncode == 2
    assert "SCRIPTED_KEY" in done.stderr and "spaces" in done.stderr
    assert "sk-has a space" not in done.stderr


def test_an_empty_key_is_refused(cli_env, scripted_config):
    done = run(cli_env, "key", "set", "scripted", stdin="\n")
    assert done.returncode == 2
    assert "empty" in done.stderr


def test_unknown_provider_is_exit_2(cli_env):
    done = run(cli_env, "ask", "hi", "--provider", "nope")
    assert done.returncode == 2
    assert "unknown provider 'nope'" in done.stderr


def test_an_unknown_model_is_exit_2_naming_the_models_there_are(cli_env, tmp_path, scripted):
    path = tmp_path / "keyless.toml"
    path.write_text(scripted_bouquet(scripted.url, key="none"))
    cli_env["AETHERFLOW_CONFIG"] = str(path)
    done = run(cli_env, "ask", "hi", "-p", "scripted", "-m", "gpt-nope")
    assert done.returncode == 2, done.stderr
    error = done.stderr.strip()
    assert "\n" not in error and "no known price" not in error
    assert error.startswith("aetherflow: error: unknown model 'gpt-nope' for scripted")
    assert "use one of: echo, status:503" in error
    anywhere = run(cli_env, "ask", "hi", "-m", "gpt-nope")
    assert anywhere.returncode == 2, anywhere.stderr
    assert "unknown model 'gpt-nope'" in anywhere.stderr
    assert "scripted/echo, scripted/status:503" in anywhere.stderr
    assert not scripted.requests  # refused before any call


def test_untrusted_answer_text_is_neutralised(cli_env, tmp_path):
    path = tmp_path / "b.toml"
    with ScriptedServer() as keyless:
        path.write_text(scripted_bouquet(keyless.url, key="none"))
        done = run(cli_env, "ask", "\x1b[31mred [bold]x[/bold]", "-p", "scripted",
                   "--config", str(path))
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert "\x1b" not in first
    assert first == "echo: \\x1b[31mred [bold]x[/bold]"


def test_help_lists_the_commands_and_exit_codes(cli_env):
    done = run(cli_env, "--help")
    assert done.returncode == 0
    for word in ("providers", "ask", "config", "key", "spend", "Exit codes"):
        assert word in done.stdout


def test_offline_ask_on_the_default_bouquet_fails_cleanly(cli_env, tmp_path):
    # A key for groq, but no network here: a connection error, exit 1, no traceback.
    path = tmp_path / "offline.toml"
    path.write_text(bouquet_text(provider_table(
        "groq", model_entry("llama-3.3-70b-versatile", roles=["chat"]),
        base_url="http://127.0.0.1:9/v1", key="none")))
    done = run(cli_env, "ask", "hi", "--config", str(path))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "cannot reach http://127.0.0.1:9/v1" in done.stderr


def test_a_keymap_typo_is_exit_2_before_the_cockpit_opens(cli_env, tmp_path, scripted):
    path = tmp_path / "keymap.toml"
    path.write_text(scripted_bouquet(scripted.url) + '\n[cockpit.keymap]\napprovalz = "x"\n')
    done = run(cli_env, "--config", str(path))
    assert done.returncode == 2
    assert "unknown binding id 'approvalz'" in done.stderr and "approvals" in done.stderr
