"""The bouquet config: the embedded default, operator files, and errors that point at file:line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from aetherflow_tui.engine import config
from aetherflow_tui.engine.errors import EXIT_INVALID, ConfigError
from tests.support.plans import wide_bouquet

DEFAULT_PROVIDERS = {"groq", "mistral", "codestral", "deepseek", "gemini", "openai", "openrouter"}

# A valid two-model bouquet; each bad-input test changes one line of it.
GOOD = textwrap.dedent(
    """\
    [budget]
    daily_usd = 2.5

    [providers.acme]
    kind = "openai"
    base_url = "https://api.acme.example/v1"
    key = "env:ACME_KEY"
    zone = "FRA"
    [[providers.acme.models]]
    id = "acme-small"
    roles = ["fast", "cheap"]
    [[providers.acme.models]]
    id = "acme-large"
    roles = ["quality"]
    price_in = 1.0
    price_out = 2.0
    """
)
SOURCE = Path("/etc/aetherflow/bouquet.toml")


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line number of the n-th line containing needle."""
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) >= occurrence, f"{needle!r} not in the test TOML"
    return hits[occurrence - 1]


def config_error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config.parse(text, SOURCE)
    return info.value


def assert_points_at(err: ConfigError, line: int, *reason_parts: str) -> None:
    message = str(err)
    assert "\n" not in message
    assert message.startswith(f"{SOURCE}:{line}: "), message
    assert err.path == str(SOURCE)
    assert err.line == line
    for part in reason_parts:
        assert part in message, message


# --- the embedded default -----------------------------------------------------------------


def test_embedded_default_has_every_provider_with_url_models_roles_and_zone():
    bouquet = config.parse(config.default_text(), None)

    assert set(bouquet.providers) == DEFAULT_PROVIDERS | {"local"}
    assert bouquet.source is None
    assert bouquet.source_label == "embedded default"
    local = bouquet.providers.pop("local")
    assert local.kind == "llama_cpp" and local.key == "none" and local.local
    assert [(m.id, m.path) for m in local.models] == [("gemma-3-270m", "embedded")]
    assert "survival" in local.models[0].roles
    assert bouquet.modes.pin == "auto"
    for pid, spec in bouquet.providers.items():
        assert spec.id == pid
        assert spec.kind == "openai"
        assert spec.base_url is not None and spec.base_url.startswith("https://"), pid
        assert spec.key == "keyring", pid
        assert len(spec.zone) == 3 and spec.zone.isupper(), pid
        assert spec.models, pid
        for model in spec.models:
            assert model.id
            assert model.roles, f"{pid}/{model.id} has no roles"
            assert set(model.roles) <= config.ROLES


def test_embedded_default_values_are_the_documented_ones():
    bouquet = config.parse(config.default_text(), None)

    assert bouquet.budget.daily_usd == 5.0
    assert bouquet.budget.max_usd_per_1k_tokens == 0.02
    assert bouquet.budget.max_usd_per_request == 0.10
    groq = bouquet.providers["groq"]
    assert groq.base_url == "https://api.groq.com/openai/v1"
    assert groq.zone == "USA"
    assert groq.rpm == 30
    assert groq.model("llama-3.3-70b-versatile").params_b == 70
    assert bouquet.providers["codestral"].price_id == "mistral"
    assert bouquet.providers["mistral"].zone == "FRA"
    assert bouquet.providers["openai"].energy_id == "openai"


def test_load_none_gives_the_embedded_default():
    bouquet = config.load(None)

    assert bouquet.source is None
    assert set(bouquet.providers) == DEFAULT_PROVIDERS | {"local"}


def test_load_missing_file_gives_the_embedded_default(tmp_path):
    bouquet = config.load(tmp_path / "nowhere" / "bouquet.toml")

    assert bouquet.source is None
    assert set(bouquet.providers) == DEFAULT_PROVIDERS | {"local"}


def test_load_an_operator_file_keeps_its_path_and_only_its_providers(tmp_path):
    path = tmp_path / "bouquet.toml"
    path.write_text(GOOD, encoding="utf-8")

    bouquet = config.load(path)

    assert bouquet.source == path
    assert bouquet.source_label == str(path)
    assert set(bouquet.providers) == {"acme"}
    assert bouquet.budget.daily_usd == 2.5
    acme = bouquet.providers["acme"]
    assert acme.key_env == "ACME_KEY"
    assert [m.id for m in acme.models] == ["acme-small", "acme-large"]
    assert acme.model("acme-large").price_in == 1.0
    assert acme.model("acme-small").price_in is None


def test_load_error_names_the_file_it_read(tmp_path):
    path = tmp_path / "bouquet.toml"
    path.write_text(GOOD.replace('zone = "FRA"', 'zone = "france"'), encoding="utf-8")

    with pytest.raises(ConfigError) as info:
        config.load(path)

    assert str(info.value).startswith(f"{path}:{line_of(GOOD, 'zone = ')}: ")
    assert info.value.exit_code == EXIT_INVALID


def test_operator_file_with_a_keyless_ollama_provider_parses():
    text = GOOD + textwrap.dedent(
        """
        [providers.ollama]
        kind = "openai"
        base_url = "http://127.0.0.1:11434/v1/"
        key = "none"
        zone = "FRA"
        [[providers.ollama.models]]
        id = "qwen2.5-coder:3b"
        roles = ["code", "survival"]
        price_in = 0.0
        price_out = 0.0
        params_b = 3
        """
    )

    bouquet = config.parse(text, SOURCE)

    ollama = bouquet.providers["ollama"]
    assert ollama.key == "none"
    assert ollama.key_env is None
    assert ollama.base_url == "http://127.0.0.1:11434/v1"  # trailing slash dropped
    model = ollama.model("qwen2.5-coder:3b")
    assert model.roles == ("code", "survival")
    assert (model.price_in, model.price_out, model.params_b) == (0.0, 0.0, 3)


def test_the_commented_examples_in_the_default_parse_when_uncommented():
    lines = config.default_text().splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("# [providers.ollama]"))
    uncommented = "\n".join(line.removeprefix("# ").removeprefix("#") for line in lines[start:])

    bouquet = config.parse(uncommented, None)

    assert set(bouquet.providers) == {"ollama", "llamacpp_server", "vllm"}
    assert all(p.key == "none" for p in bouquet.providers.values())
    assert bouquet.providers["ollama"].local and bouquet.providers["llamacpp_server"].local


# --- bad input: one line, PATH:LINE: reason -----------------------------------------------


def test_malformed_toml_reports_tomllib_line():
    text = GOOD.replace('zone = "FRA"', 'zone "FRA"')

    err = config_error(text)

    assert_points_at(err, line_of(text, 'zone "FRA"'), "malformed TOML")
    assert "(at line" not in str(err)  # the position is in the prefix, not repeated


def test_unknown_provider_kind():
    text = GOOD.replace('kind = "openai"', 'kind = "anthropic"')

    err = config_error(text)

    assert_points_at(err, line_of(text, "kind = "), "unknown provider kind 'anthropic'",
                     '"openai"', '"llama_cpp"')


@pytest.mark.parametrize("url", ["ftp://x", "not a url", "https://"])
def test_bad_base_url(url):
    text = GOOD.replace("https://api.acme.example/v1", url)

    err = config_error(text)

    assert_points_at(err, line_of(text, "base_url = "), "providers.acme.base_url",
                     f"{url!r} is not an http(s) URL")


def test_openai_provider_without_base_url_points_at_its_table():
    text = "\n".join(line for line in GOOD.splitlines() if not line.startswith("base_url"))

    err = config_error(text)

    assert_points_at(err, line_of(text, "[providers.acme]"), "needs base_url")


def test_provider_with_no_models():
    text = textwrap.dedent(
        """\
        [budget]
        daily_usd = 1.0
        [providers.bare]
        kind = "openai"
        base_url = "https://bare.example/v1"
        """
    )

    err = config_error(text)

    assert_points_at(err, 3, "providers.bare.models is required")


def test_provider_with_an_empty_models_list():
    text = textwrap.dedent(
        """\
        [providers.bare]
        kind = "openai"
        base_url = "https://bare.example/v1"
        models = []
        """
    )

    err = config_error(text)

    assert_points_at(err, 4, "providers.bare.models")


def test_model_without_id_points_at_its_own_array_entry():
    text = GOOD.replace('id = "acme-large"\n', "")

    err = config_error(text)

    assert_points_at(err, line_of(text, "[[providers.acme.models]]", occurrence=2),
                     "providers.acme.models.1.id is required")


def test_negative_price_in():
    text = GOOD.replace("price_in = 1.0", "price_in = -0.5")

    err = config_error(text)

    assert_points_at(err, line_of(text, "price_in = -0.5"), "providers.acme.models.1.price_in",
                     "greater than or equal to 0")


def test_unknown_role():
    text = GOOD.replace('roles = ["quality"]', 'roles = ["quality", "poetry"]')

    err = config_error(text)

    assert_points_at(err, line_of(text, '"poetry"'), "unknown role 'poetry'", "survival")


def test_bad_key_source():
    text = GOOD.replace('key = "env:ACME_KEY"', 'key = "plaintext:abc"')

    err = config_error(text)

    assert_points_at(err, line_of(text, "key = "), "providers.acme.key",
                     '"keyring", "none" or "env:NAME"', "'plaintext:abc'")


def test_env_key_source_needs_a_valid_variable_name():
    text = GOOD.replace('key = "env:ACME_KEY"', 'key = "env:1-BAD"')

    err = config_error(text)

    assert_points_at(err, line_of(text, "key = "), "providers.acme.key")


def test_bad_zone():
    text = GOOD.replace('zone = "FRA"', 'zone = "france"')

    err = config_error(text)

    assert_points_at(err, line_of(text, "zone = "), "zone 'france'", "alpha-3")


def test_duplicate_model_id_points_at_the_second_declaration():
    text = GOOD.replace('id = "acme-large"', 'id = "acme-small"')

    err = config_error(text)

    assert_points_at(err, line_of(text, 'id = "acme-small"', occurrence=2),
                     "model 'acme-small' is declared twice")


def test_llama_cpp_model_without_path_points_at_that_model():
    text = textwrap.dedent(
        """\
        [providers.local]
        kind = "llama_cpp"
        [[providers.local.models]]
        id = "code-3b"
        path = "embedded"
        [[providers.local.models]]
        id = "chat-1b"
        """
    )

    err = config_error(text)

    assert_points_at(err, 6, "llama_cpp model 'chat-1b' needs path")


def _local_model_at(path: str) -> str:
    return textwrap.dedent(
        f"""\
        [providers.local]
        kind = "llama_cpp"
        [[providers.local.models]]
        id = "code-3b"
        path = "{path}"
        """
    )


def test_missing_gguf_path_points_at_the_path_and_says_the_fix(tmp_path):
    missing = tmp_path / "nowhere" / "code-3b.gguf"

    err = config_error(_local_model_at(str(missing)))

    assert_points_at(err, 5, f"model file {missing} does not exist")
    assert 'path = "embedded"' in str(err)


def test_a_file_that_is_not_gguf_is_refused(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"<html>404 Not Found</html>")

    err = config_error(_local_model_at(str(fake)))

    assert_points_at(err, 5, f"model file {fake} is not a GGUF file")


def test_a_directory_is_not_a_model_file(tmp_path):
    err = config_error(_local_model_at(str(tmp_path)))

    assert_points_at(err, 5, "is not a file")


def test_a_real_gguf_header_is_accepted(tmp_path):
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF" + bytes(60))

    bouquet = config.parse(_local_model_at(str(model)), None)

    assert bouquet.providers["local"].local
    assert bouquet.providers["local"].models[0].path == str(model)


def test_survival_threshold_below_hybrid_names_both_keys():
    text = GOOD + "\n[modes]\nhybrid_budget_pct = 90\nsurvival_budget_pct = 50\n"

    err = config_error(text)

    assert_points_at(err, line_of(text, "survival_budget_pct"),
                     "survival_budget_pct (50) is below hybrid_budget_pct (90)")
    assert err.exit_code == EXIT_INVALID


def test_modes_defaults_and_local_types():
    bouquet = config.parse(GOOD + '\n[modes]\npin = "hybrid"\nlocal_types = ["review"]\n',
                           None)

    assert bouquet.modes.pin == "hybrid"
    assert bouquet.modes.local_types == ("review",)
    assert config.parse(GOOD, None).modes.pin == "auto"


def test_chat_format_and_template_together_are_refused():
    text = _local_model_at("embedded") + 'chat_format = "gemma"\nchat_template = "{{ x }}"\n'

    err = config_error(text)

    assert_points_at(err, 7, "sets both chat_format and chat_template")


def test_an_openai_server_is_local_only_when_the_config_says_so():
    assert not config.parse(GOOD, None).providers["acme"].local
    text = GOOD.replace('kind = "openai"', 'kind = "openai"\nlocal = true', 1)
    assert config.parse(text, None).providers["acme"].local


def test_unknown_provider_setting_typo():
    text = GOOD.replace("base_url", "base_ulr")

    err = config_error(text)

    assert_points_at(err, line_of(text, "base_ulr"), "unknown setting providers.acme.base_ulr")


def test_unknown_model_setting_typo():
    text = GOOD.replace("price_out = 2.0", "price_outt = 2.0")

    err = config_error(text)

    assert_points_at(err, line_of(text, "price_outt"),
                     "unknown setting providers.acme.models.1.price_outt")


def test_negative_budget():
    text = GOOD.replace("daily_usd = 2.5", "daily_usd = -1")

    err = config_error(text)

    assert_points_at(err, line_of(text, "daily_usd"), "budget.daily_usd")


def test_a_key_with_a_line_break_still_gives_a_one_line_error():
    text = GOOD.replace('zone = "FRA"', 'zone = "FRA"\n"evil\\nkey" = 1')

    err = config_error(text)

    assert "\n" not in str(err)
    assert "unknown setting" in str(err)


def test_no_providers_at_all_names_the_file():
    err = config_error("[budget]\ndaily_usd = 1.0\n")

    assert str(err) == f"{SOURCE}: providers is required"


def test_errors_in_the_embedded_default_are_labelled_as_such():
    with pytest.raises(ConfigError) as info:
        config.parse(config.default_text().replace('zone = "CHN"', 'zone = "cn"'), None)

    assert str(info.value).startswith("embedded default:")


# --- locate() -----------------------------------------------------------------------------

LOCATE_TEXT = textwrap.dedent(
    """\
    # a comment: id = "not this"
    [providers.groq]
    kind = "openai"
    [[providers.groq.models]]
    id = "first"
    roles = ["fast"]

    [[providers.groq.models]]
    id = "second"
    price_in = 1.0
    [providers.mistral]
    kind = "openai"
    [[providers.mistral.models]]
    id = "m"
    """
)


@pytest.mark.parametrize(
    ("loc", "line"),
    [
        (("providers", "groq"), 2),
        (("providers", "groq", "kind"), 3),
        (("providers", "groq", "models", 0), 4),
        (("providers", "groq", "models", 0, "id"), 5),
        (("providers", "groq", "models", 0, "roles", 0), 6),
        (("providers", "groq", "models", 1), 8),
        (("providers", "groq", "models", 1, "id"), 9),
        (("providers", "groq", "models", 1, "price_in"), 10),
        (("providers", "groq", "models", 1, "roles"), 8),  # absent key: its entry's header
        (("providers", "mistral", "models", 0, "id"), 14),  # arrays are counted per table
        (("providers", "mistral", "kind"), 12),
        (("providers", "groq", "base_url"), 2),
        (("providers", "nowhere", "kind"), None),
    ],
)
def test_locate_counts_array_of_tables_entries(loc, line):
    assert config.locate(LOCATE_TEXT, loc) == line


def test_locate_handles_quoted_table_names():
    text = '[providers."groq"]\n[[providers."groq".models]]\nid = "a"\n'

    assert config.locate(text, ("providers", "groq", "models", 0, "id")) == 3


def test_half_a_price_override_is_refused_at_its_line():
    text = textwrap.dedent(
        """
        [providers.x]
        kind = "openai"
        base_url = "http://127.0.0.1:8080/v1"
        [[providers.x.models]]
        id = "m"
        price_in = 0.5
        """
    )
    with pytest.raises(ConfigError) as caught:
        config.parse(text, Path("b.toml"))
    assert "add price_out too" in str(caught.value)
    assert str(caught.value).startswith("b.toml:5: ")


# -- vigilance: canaries, health, regulator ------------------------------------------------


def test_vigilance_defaults_are_the_documented_ones():
    bouquet = config.parse(GOOD, SOURCE)
    assert (bouquet.canary.interval_s, bouquet.canary.unhealthy_interval_s,
            bouquet.canary.daily_usd) == (300, 30, 0.05)
    assert (bouquet.health.failure_threshold, bouquet.health.success_threshold,
            bouquet.health.passive_failures) == (3, 2, 1)
    assert bouquet.regulator.threshold("critical", "cpu_pct") == 98
    assert bouquet.regulator.threshold("stressed", "battery_pct") == 30


def test_a_stressed_threshold_above_critical_names_both_keys():
    text = GOOD + "\n[regulator.stressed]\ncpu_pct = 99\n"

    err = config_error(text)

    assert_points_at(err, line_of(text, "cpu_pct = 99"),
                     "regulator.stressed.cpu_pct (99) is not below regulator.degraded.cpu_pct")


def test_a_critical_battery_level_above_degraded_names_both_keys():
    text = GOOD + "\n[regulator.critical]\nbattery_pct = 40\n"

    err = config_error(text)

    assert_points_at(err, line_of(text, "battery_pct = 40"),
                     "regulator.degraded.battery_pct (15) is not above "
                     "regulator.critical.battery_pct (40)")


def test_an_operator_threshold_that_keeps_the_order_is_accepted():
    text = GOOD + "\n[regulator.stressed]\ncpu_pct = 50\n[regulator.critical]\ncpu_pct = 99\n"
    regulator = config.parse(text, SOURCE).regulator
    assert [regulator.threshold(level, "cpu_pct") for level in config.REGULATOR_LEVELS] == [
        50, 90, 99]


def test_a_slower_unhealthy_canary_interval_is_refused():
    text = GOOD + "\n[canary]\ninterval_s = 60\nunhealthy_interval_s = 120\n"

    err = config_error(text)

    assert_points_at(err, line_of(text, "unhealthy_interval_s"),
                     "canary.unhealthy_interval_s (120) is above canary.interval_s (60)")


def test_a_canary_model_must_be_one_of_the_providers_models():
    text = GOOD.replace('zone = "FRA"\n', 'zone = "FRA"\ncanary_model = "acme-huge"\n')

    err = config_error(text)

    assert_points_at(err, line_of(text, "canary_model"), "canary_model 'acme-huge' is not")


def test_a_status_page_must_be_an_http_url():
    text = GOOD.replace('zone = "FRA"\n', 'zone = "FRA"\nstatus_page = "file:///etc/passwd"\n')

    err = config_error(text)

    assert_points_at(err, line_of(text, "status_page"), "is not an http(s) URL")


# --- values and files that would break the parser or the store ----------------------------


@pytest.mark.parametrize("value", ["inf", "+inf", "-inf", "nan"])
@pytest.mark.parametrize(("setting", "where"), [
    ("price_in", "price_in = 1.0"),
    ("daily_usd", "daily_usd = 2.5"),
])
def test_inf_and_nan_are_refused_where_a_price_or_limit_goes(setting, where, value):
    text = GOOD.replace(where, f"{setting} = {value}")
    err = config_error(text)
    assert_points_at(err, line_of(GOOD, where), f"{setting}: must be a finite number",
                     "inf or nan")


@pytest.mark.parametrize("setting", ["max_usd_per_request", "max_usd_per_1k_tokens"])
def test_an_infinite_ceiling_is_refused(setting):
    text = GOOD.replace("daily_usd = 2.5", f"daily_usd = 2.5\n{setting} = inf")
    err = config_error(text)
    assert_points_at(err, line_of(text, setting), f"budget.{setting}: must be a finite number")


def test_a_large_finite_limit_is_how_a_limit_is_lifted():
    text = GOOD.replace("daily_usd = 2.5", "daily_usd = 1e12\nmax_usd_per_request = 1e9")
    budget = config.parse(text, SOURCE).budget
    assert (budget.daily_usd, budget.max_usd_per_request) == (1e12, 1e9)


@pytest.mark.parametrize("nested", [
    "x = " + "[" * 5000 + "]" * 5000,
    "x = " + "{a = " * 5000 + "1" + "}" * 5000,
    "x = " + "[" * 5000,  # unclosed as well: the depth is what fails first
], ids=["array", "table", "unclosed"])
def test_deeply_nested_toml_is_one_line_not_a_recursion_traceback(nested):
    err = config_error(f"[budget]\n{nested}\n")
    message = str(err)
    assert "\n" not in message and err.exit_code == EXIT_INVALID
    assert message.startswith(f"{SOURCE}: malformed TOML: arrays or inline tables nested "
                              "too deeply"), message


def _special(kind: str, tmp_path: Path) -> Path:
    """A path that is not a plain small file: the same set for config and plan tests."""
    import os

    if kind == "dev_zero":
        return Path("/dev/zero")
    path = tmp_path / f"special-{kind}"
    if kind == "symlink_loop":
        os.symlink(path, path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "sparse_1gb":
        with path.open("wb") as file:
            file.truncate(1 << 30)
    return path


@pytest.mark.parametrize(("kind", "reason"), [
    ("dev_zero", "the config is a character device, not a regular file"),
    ("symlink_loop", "cannot read config: Too many levels of symbolic links"),
    ("directory", "the config is a directory, not a regular file"),
    ("sparse_1gb", "the config is 1,073,741,824 bytes, over the 1,048,576-byte limit"),
])
def test_a_config_that_is_not_a_small_regular_file_is_refused(tmp_path, kind, reason):
    # (A FIFO is tested through the CLI, in a subprocess with a timeout: it could hang.)
    path = _special(kind, tmp_path)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(info.value).startswith(f"{path}: {reason}"), str(info.value)
    assert info.value.exit_code == EXIT_INVALID


def test_a_config_of_three_thousand_providers_loads_whole(tmp_path):
    # How fast: benchmarks/config_load.py and docs/benchmarks.md; not timed here.
    text = wide_bouquet(3000)
    assert len(text.encode()) < config.MAX_CONFIG_BYTES
    path = tmp_path / "bouquet.toml"
    path.write_text(text, encoding="utf-8")
    bouquet = config.load(path)
    assert len(bouquet.providers) == 3000
    last = bouquet.providers["p2999"]
    assert [m.id for m in last.models] == ["small-2999", "large-2999"]
    assert last.base_url == "https://api2999.example/v1" and last.key_env == "KEY_2999"


def test_an_error_at_the_end_of_a_big_config_still_points_at_its_line():
    text = wide_bouquet(3000) + textwrap.dedent("""\
        [providers.last]
        kind = "openai"
        base_url = "https://last.example/v1"
        zone = "france"
        [[providers.last.models]]
        id = "m"
        """)
    err = config_error(text)
    assert_points_at(err, line_of(text, 'zone = "france"'), "zone 'france'")
