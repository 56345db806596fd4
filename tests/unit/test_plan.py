"""plan.json validation: every problem exits 2 and points at file, line and place in the plan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aetherflow_tui.engine import plan
from aetherflow_tui.engine.config import STEP_TYPES
from aetherflow_tui.engine.errors import EXIT_INVALID, PlanError

REPO_ROOT = Path(__file__).resolve().parents[2]
PLAN_FILE = Path("plan.json")
KNOWN = {"alpha": ("alpha-small", "alpha-large"), "beta": ("beta-coder",)}


def step(step_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "analysis", "prompt": f"look at {step_id}", **fields}


def plan_text(*steps: dict[str, Any]) -> str:
    """A plan as a planner writes it: indented, one field a line, so every place has its line."""
    return json.dumps({"task_id": "demo", "steps": list(steps)}, indent=2)


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) >= occurrence, f"{needle!r} not in the test plan"
    return hits[occurrence - 1]


def plan_error(text: str, **kw: Any) -> PlanError:
    with pytest.raises(PlanError) as info:
        plan.parse(text, PLAN_FILE, **kw)
    return info.value


def assert_points_at(err: PlanError, line: int, place: str | None, *parts: str,
                     path: Path = PLAN_FILE) -> None:
    message = str(err)
    assert err.exit_code == EXIT_INVALID == 2
    assert "\n" not in message
    assert err.line == line
    head = f"{path}:{line}: " + (f"{place}: " if place else "")
    assert message.startswith(head), message
    for part in parts:
        assert part in message, message


# --- a valid plan ----------------------------------------------------------------------


def test_a_valid_plan_fills_in_the_defaults() -> None:
    parsed = plan.parse(plan_text(step("a"), step("b", depends_on=["a"])), PLAN_FILE)

    assert parsed.task_id == "demo"
    assert parsed.description == ""
    assert [s.id for s in parsed.steps] == ["a", "b"]
    first = parsed.step("a")
    assert first.type == "analysis"
    assert first.prompt == "look at a"
    assert first.context_files == ()
    assert first.depends_on == ()
    assert first.complexity == 0.5
    assert first.estimated_tokens == 1000
    assert first.provider is None
    assert first.model is None
    assert first.output == "text"
    assert first.max_tokens == 1024
    assert parsed.step("b").depends_on == ("a",)


def test_load_reads_the_file_and_checks_context_files_next_to_it(tmp_path: Path) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "notes.md").write_text("the notes\n", "utf-8")
    path = folder / "plan.json"
    path.write_text(plan_text(step("a", context_files=["notes.md"])), "utf-8")

    parsed = plan.load(path)

    assert parsed.step("a").context_files == ("notes.md",)
    assert plan.context_text(folder, "notes.md") == "the notes\n"


def test_pins_declared_in_the_bouquet_are_accepted() -> None:
    text = plan_text(step("a", provider="alpha", model="alpha-large"),
                     step("b", model="beta-coder"), step("c", provider="beta"))

    parsed = plan.parse(text, PLAN_FILE, known_providers=KNOWN)

    assert parsed.step("a").model == "alpha-large"
    assert parsed.step("b").provider is None


def test_without_known_providers_pins_are_not_checked() -> None:
    parsed = plan.parse(plan_text(step("a", provider="nobody", model="nothing")), PLAN_FILE)

    assert parsed.step("a").provider == "nobody"


# --- every problem: exit 2, file, line, place -------------------------------------------


def test_malformed_json_gives_the_decoders_line() -> None:
    text = (
        '{\n'
        '  "task_id": "demo",\n'
        '  "steps": [\n'
        '    {"id": "a", "type": "analysis", "prompt": "p",}\n'
        '  ]\n'
        '}\n'
    )
    err = plan_error(text)

    assert_points_at(err, 4, None, "not valid JSON")


def test_missing_task_id_points_at_the_plan_itself() -> None:
    text = "\n\n" + json.dumps({"steps": [step("a")]}, indent=2)  # the plan starts on line 3

    err = plan_error(text)

    assert_points_at(err, 3, "task_id", "is required")


def test_empty_steps_are_refused() -> None:
    text = plan_text()

    err = plan_error(text)

    assert_points_at(err, line_of(text, '"steps"'), "steps", "at least 1")


def test_an_unknown_step_type_lists_the_valid_types() -> None:
    text = plan_text(step("a"), step("b"), step("c", type="dance"))

    err = plan_error(text)

    assert_points_at(err, line_of(text, '"dance"'), 'steps[2] "c".type',
                     "unknown step type 'dance'", *STEP_TYPES)


def test_an_unknown_output_lists_the_valid_outputs() -> None:
    text = plan_text(step("a"), step("b", output="yaml"))

    err = plan_error(text)

    assert_points_at(err, line_of(text, '"yaml"'), 'steps[1] "b".output',
                     "unknown output 'yaml'; use one of: text, code, json")


@pytest.mark.parametrize("complexity", [1.5, -0.1])
def test_complexity_must_be_between_0_and_1(complexity: float) -> None:
    text = plan_text(step("a"), step("b"), step("c", complexity=complexity))

    err = plan_error(text)

    assert_points_at(err, line_of(text, '"complexity"'), 'steps[2] "c".complexity',
                     str(complexity))


def test_max_tokens_0_is_refused() -> None:
    text = plan_text(step("a", max_tokens=0), step("b"))

    err = plan_error(text)

    assert_points_at(err, line_of(text, '"max_tokens"'), 'steps[0] "a".max_tokens',
                     "greater than or equal to 1")


def test_a_word_where_a_number_belongs_is_refused() -> None:
    text = plan_text(step("a"), step("b", estimated_tokens="lots"))

    err = plan_error(text)

    assert_points_at(err, line_of(text, '"lots"'), 'steps[1] "b".estimated_tokens',
                     "valid integer", '"lots"')


@pytest.mark.parametrize(("field", "value"), [("estimated_tokens", "4000"), ("complexity", True)])
def test_a_value_of_the_wrong_json_type_is_refused(field: str, value: Any) -> None:
    text = plan_text(step("a"), step("b", **{field: value}))

    err = plan_error(text)

    assert_points_at(err, line_of(text, f'"{field}"'), f'steps[1] "b".{field}')


def test_an_unknown_field_is_refused() -> None:
    text = plan_text(step("a"), step("b", colour="blue"))

    err = plan_error(text)

    assert_points_at(err, line_of(text, '"colour"'), 'steps[1] "b".colour', "unknown field")


def test_an_unknown_field_at_the_top_is_refused() -> None:
    text = json.dumps({"task_id": "demo", "owner": "me", "steps": [step("a")]}, indent=2)

    err = plan_error(text)

    assert_points_at(err, line_of(text, '"owner"'), "owner", "unknown field")


@pytest.mark.parametrize("bad_id", ["has space", "-leading-dash", "a/b", "../escape", "é"])
def test_step_ids_are_safe_file_names(bad_id: str) -> None:
    text = plan_text(step("a"), step(bad_id))

    err = plan_error(text)

    place = f"steps[1] {json.dumps(bad_id)}.id"
    assert_points_at(err, line_of(text, json.dumps(bad_id)), place, "pattern")


def test_a_duplicate_id_points_at_the_second_use() -> None:
    text = plan_text(step("a"), step("b"), step("a"))

    err = plan_error(text)

    assert_points_at(err, line_of(text, '"id": "a"', occurrence=2), 'steps[2] "a".id',
                     "duplicate step id 'a' (first used by steps[0])")


def test_an_unknown_dependency_names_it_and_the_known_steps() -> None:
    text = plan_text(step("a"), step("b", depends_on=["a", "ghost"]))

    err = plan_error(text)

    assert_points_at(err, line_of(text, '"ghost"'), 'steps[1] "b".depends_on[1]',
                     "unknown step 'ghost'", "depend on one of: a, b")


def test_a_step_that_depends_on_itself_is_a_cycle() -> None:
    text = plan_text(step("a"), step("b", depends_on=["b"]))

    err = plan_error(text)

    assert_points_at(err, line_of(text, '"depends_on"'), 'steps[1] "b".depends_on',
                     "dependency cycle: b → b")


def test_a_three_step_cycle_is_printed_in_order() -> None:
    text = plan_text(step("start"), step("a", depends_on=["start", "b"]),
                     step("b", depends_on=["c"]), step("c", depends_on=["a"]))

    err = plan_error(text)

    assert_points_at(err, line_of(text, '"depends_on"'), 'steps[1] "a".depends_on',
                     "dependency cycle: a → b → c → a")


def test_an_unknown_provider_pin_lists_the_known_ones() -> None:
    text = plan_text(step("a"), step("b", provider="gamma"))

    err = plan_error(text, known_providers=KNOWN)

    assert_points_at(err, line_of(text, '"gamma"'), 'steps[1] "b".provider',
                     "unknown provider 'gamma'", "pin one of: alpha, beta")


def test_a_model_pin_must_belong_to_the_pinned_provider() -> None:
    text = plan_text(step("a", provider="alpha", model="beta-coder"))

    err = plan_error(text, known_providers=KNOWN)

    assert_points_at(err, line_of(text, '"model"'), 'steps[0] "a".model',
                     "model 'beta-coder' is not declared for provider 'alpha'")


def test_a_model_pin_alone_must_be_declared_by_some_provider() -> None:
    text = plan_text(step("a", model="mystery"))

    err = plan_error(text, known_providers=KNOWN)

    assert_points_at(err, line_of(text, '"mystery"'), 'steps[0] "a".model',
                     "model 'mystery' is not declared for any provider")


def test_a_missing_context_file_is_looked_for_next_to_the_plan(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("notes", "utf-8")
    text = plan_text(step("a", context_files=["notes.md", "missing.md"]))
    path = tmp_path / "plan.json"
    path.write_text(text, "utf-8")

    with pytest.raises(PlanError) as info:
        plan.load(path)

    assert_points_at(info.value, line_of(text, '"missing.md"'), 'steps[0] "a".context_files[1]',
                     "context file 'missing.md' not found", str(tmp_path), path=path)


@pytest.mark.parametrize("name", ["../secret.txt", "sub/../../secret.txt", "/etc/hostname"])
def test_a_context_file_outside_the_plan_folder_is_refused(tmp_path: Path, name: str) -> None:
    # A plan written by a model must not be able to send any file of the user to a provider.
    (tmp_path / "secret.txt").write_text("secret", "utf-8")
    folder = tmp_path / "plans"
    folder.mkdir()
    (folder / "sub").mkdir()
    text = plan_text(step("a", context_files=[name]))
    path = folder / "plan.json"
    path.write_text(text, "utf-8")

    with pytest.raises(PlanError) as info:
        plan.load(path)

    assert "is outside the plan's folder" in str(info.value)
    assert 'steps[0] "a".context_files[0]' in str(info.value)


def test_a_missing_plan_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.json"

    with pytest.raises(PlanError) as info:
        plan.load(path)

    assert info.value.exit_code == 2
    assert str(info.value).startswith(f"{path}: plan file not found; ")


# --- cycles ----------------------------------------------------------------------------


def test_find_cycle_returns_none_for_a_diamond() -> None:
    graph = {"top": ("left", "right"), "left": ("bottom",), "right": ("bottom",), "bottom": ()}

    assert plan.find_cycle(graph) is None


def test_find_cycle_returns_the_cycle_from_where_it_closes() -> None:
    graph = {"x": ("a",), "a": ("b",), "b": ("c",), "c": ("a",)}

    assert plan.find_cycle(graph) == ["a", "b", "c", "a"]


def test_find_cycle_walks_a_10000_step_chain_without_recursion() -> None:
    n = 10_000
    chain = {f"s{i}": (f"s{i + 1}",) for i in range(n - 1)} | {f"s{n - 1}": ()}

    assert plan.find_cycle(chain) is None

    chain[f"s{n - 1}"] = ("s0",)
    cycle = plan.find_cycle(chain)
    assert cycle is not None
    assert len(cycle) == n + 1
    assert cycle[0] == cycle[-1] == "s0"


# --- digest ----------------------------------------------------------------------------


def test_the_digest_ignores_whitespace_and_key_order() -> None:
    document = {"task_id": "demo", "steps": [step("a"), step("b", depends_on=["a"])]}
    shuffled = {"steps": [dict(reversed(list(s.items()))) for s in document["steps"]],
                "task_id": "demo"}

    pretty = plan.parse(json.dumps(document, indent=4), PLAN_FILE)
    compact = plan.parse(json.dumps(shuffled, separators=(",", ":")), PLAN_FILE)

    assert pretty.digest() == compact.digest()


def test_the_digest_changes_with_a_prompt() -> None:
    before = plan.parse(plan_text(step("a"), step("b")), PLAN_FILE)
    after = plan.parse(plan_text(step("a"), step("b", prompt="look at b again")), PLAN_FILE)

    assert before.digest() != after.digest()


# --- schema ----------------------------------------------------------------------------


def test_the_committed_schema_is_the_one_the_code_generates() -> None:
    committed = json.loads((REPO_ROOT / "schemas" / "plan.schema.json").read_text("utf-8"))

    assert committed == plan.schema(), (
        "schemas/plan.schema.json is stale; regenerate it with "
        "`aetherflow plan schema > schemas/plan.schema.json`")


EXAMPLE_PLANS = [
    {"task_id": "one", "steps": [step("a")]},
    {"task_id": "chain", "description": "two steps", "steps": [
        step("read", context_files=["notes.md"], output="json", max_tokens=256),
        step("write", type="code_generation", depends_on=["read"], complexity=0.9,
             estimated_tokens=6000, output="code", provider="alpha", model="alpha-large"),
    ]},
    {"task_id": "all-types", "steps": [step(t, type=t) for t in STEP_TYPES]},
]


@pytest.mark.parametrize("example", EXAMPLE_PLANS, ids=lambda e: e["task_id"])
def test_example_plans_are_valid_under_the_schema(example: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")

    jsonschema.validate(example, plan.schema())


# --- files and nesting that would hang, exhaust memory or crash the reader -----------------


def _special(kind: str, tmp_path: Path) -> Path:
    import os

    if kind == "dev_zero":
        return Path("/dev/zero")
    path = tmp_path / f"special-{kind}"
    if kind == "symlink_loop":
        os.symlink(path, path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "sparse":
        with path.open("wb") as file:
            file.truncate(plan.MAX_PLAN_BYTES + 1)
    return path


@pytest.mark.parametrize(("kind", "reason"), [
    ("dev_zero", "the plan is a character device, not a regular file"),
    ("symlink_loop", "cannot read the plan: Too many levels of symbolic links"),
    ("directory", "the plan is a directory, not a regular file"),
    ("sparse", f"the plan is {plan.MAX_PLAN_BYTES + 1:,} bytes, over the "
               f"{plan.MAX_PLAN_BYTES:,}-byte limit"),
])
def test_a_plan_that_is_not_a_bounded_regular_file_is_refused(tmp_path: Path, kind: str,
                                                              reason: str) -> None:
    path = _special(kind, tmp_path)
    with pytest.raises(PlanError) as info:
        plan.load(path)
    assert str(info.value).startswith(f"{path}: {reason}"), str(info.value)
    assert info.value.exit_code == EXIT_INVALID


@pytest.mark.parametrize("nested", ["[" * 100_000 + "]" * 100_000,
                                    '{"a": ' * 100_000 + "1" + "}" * 100_000],
                         ids=["array", "object"])
def test_deeply_nested_json_is_one_line_not_a_recursion_traceback(nested: str) -> None:
    err = plan_error(nested)
    assert err.exit_code == EXIT_INVALID
    assert str(err) == ("plan.json: arrays or objects nested more than 32 deep; a plan nests "
                        "four levels: plan, steps, step, context_files")


def test_json_nested_past_the_plan_depth_is_refused_before_validation() -> None:
    # Deep enough for the validator, the line finder and the messages to recurse a lot,
    # shallow enough for json.loads: refused on its depth, not on whatever breaks first.
    text = '{"task_id": "t", "steps": [], "description": ' + "[" * 900 + "]" * 900 + "}"
    assert str(plan_error(text)).startswith("plan.json: arrays or objects nested more than 32")
    shallow = text.replace("[" * 900, "[" * 30).replace("]" * 900, "]" * 30)
    assert "description: Input should be a valid string" in str(plan_error(shallow))


@pytest.mark.parametrize(("kind", "reason"), [
    ("symlink_loop", "is a symlink loop"),
    ("directory", "is not a regular file"),
    ("fifo", "is not a regular file"),
])
def test_a_context_file_that_is_not_a_regular_file_is_refused(tmp_path: Path, kind: str,
                                                              reason: str) -> None:
    import os

    if kind == "fifo":
        os.mkfifo(tmp_path / "special-fifo")  # is_file() never opens it: no hang here
    else:
        _special(kind, tmp_path)
    text = plan_text(step("a", context_files=[f"special-{kind}"]))
    path = tmp_path / "plan.json"
    path.write_text(text, "utf-8")
    with pytest.raises(PlanError) as info:
        plan.load(path)
    assert_points_at(info.value, line_of(text, f'"special-{kind}"'),
                     'steps[0] "a".context_files[0]', f"context file 'special-{kind}' {reason}",
                     path=path)


def test_a_huge_context_file_is_read_only_up_to_its_cut(tmp_path: Path) -> None:
    import tracemalloc

    huge = tmp_path / "huge.log"
    with huge.open("wb") as file:
        file.write(b"head\n")
        file.truncate(64 << 20)  # sparse: 64 MB on paper, nothing on disk
    tracemalloc.start()
    try:
        text = plan.context_text(tmp_path, "huge.log")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(text) == plan.MAX_CONTEXT_BYTES and text.startswith("head\n")
    assert peak < 4 * plan.MAX_CONTEXT_BYTES, f"reading it took {peak:,} bytes"
