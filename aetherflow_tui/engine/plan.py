"""plan.json: the steps a planner hands to Aetherflow, validated before anything runs.

Every problem raises PlanError naming the file, the line and the place in the plan
(`steps[2] "build".depends_on[0]`), so the planner, human or not, can fix it in one go.
The JSON Schema published in schemas/plan.schema.json is generated from these models.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import jsonpos
from .config import STEP_TYPES
from .errors import PlanError
from .paths import FileRefused, read_bounded

OUTPUTS = ("text", "code", "json")
MAX_CONTEXT_BYTES = 256 * 1024  # per context file: a plan is not a way to upload a repo
MAX_PLAN_BYTES = 32 * 1024 * 1024  # ten thousand steps with 2 KB prompts fit in 20 MB
# A plan nests four levels (plan, steps, step, context_files); the validator, the line
# finder and the error messages all recurse, so anything much deeper is refused first.
MAX_DEPTH = 32

StepType = Literal[STEP_TYPES]  # type: ignore[valid-type]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class StepSpec(_Strict):
    """One unit of work: a prompt for one model call, plus what it needs and must return."""

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                    description="unique in the plan; also the output file's name")
    type: StepType = Field(description="what kind of work; the router's rules key on it")
    prompt: str = Field(min_length=1)
    context_files: tuple[str, ...] = Field(
        default=(), description="files whose text is given to the model, relative to the plan")
    depends_on: tuple[str, ...] = Field(
        default=(), description="steps that must finish first; their outputs are passed in")
    # strict: "4000" or true would pass here and fail the published schema's types.
    complexity: float = Field(default=0.5, ge=0, le=1, strict=True)
    estimated_tokens: int = Field(default=1000, ge=1, le=10_000_000, strict=True,
                                  description="expected size of the work, prompt and answer")
    provider: str | None = Field(default=None, description="pin a provider id")
    model: str | None = Field(default=None, description="pin a model id")
    output: Literal["text", "code", "json"] = Field(
        default="text", description="code: only code; json: one valid JSON document")
    max_tokens: int = Field(default=1024, ge=1, le=1_000_000, strict=True,
                            description="cap on the answer; the budget reserves for it")


class Plan(_Strict):
    task_id: str = Field(min_length=1, max_length=200)
    description: str = ""
    steps: tuple[StepSpec, ...] = Field(min_length=1)

    def step(self, step_id: str) -> StepSpec:
        return next(s for s in self.steps if s.id == step_id)

    def digest(self) -> str:
        """Identifies the plan's content, so a resume runs the plan it started with."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def schema() -> dict[str, Any]:
    document = Plan.model_json_schema()
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "Aetherflow plan"
    return document


def load(path: Path, *, known_providers: dict[str, tuple[str, ...]] | None = None) -> Plan:
    """Read and validate a plan file. known_providers: provider id -> model ids, for pins."""
    return parse(read_text(path), path, known_providers=known_providers)


def read_text(path: Path) -> str:
    """A plan file's text: a regular file of at most MAX_PLAN_BYTES, in UTF-8."""
    try:
        return read_bounded(path, MAX_PLAN_BYTES).decode("utf-8")
    except FileNotFoundError:
        raise PlanError("plan file not found", path=str(path),
                        fix="check the path, or write one (see the README's plan format)"
                        ) from None
    except FileRefused as exc:
        raise PlanError(f"the plan is {exc}", path=str(path),
                        fix="give the path of a plan.json file") from None
    except OSError as exc:
        raise PlanError(f"cannot read the plan: {exc.strerror or exc}", path=str(path)
                        ) from None
    except UnicodeDecodeError as exc:
        raise PlanError(f"cannot read the plan: {exc}", path=str(path)) from None


def parse(text: str, path: Path, *, known_providers: dict[str, tuple[str, ...]] | None = None
          ) -> Plan:
    label = str(path)
    try:
        raw = json.loads(text)
    except ValueError as exc:
        line = getattr(exc, "lineno", None)
        reason = getattr(exc, "msg", str(exc))
        raise PlanError(f"not valid JSON: {reason}", path=label, line=line) from None
    except RecursionError:  # json recurses once per level of nested arrays and objects
        too_deep = True
    else:
        too_deep = _deeper_than(raw, MAX_DEPTH)
    if too_deep:
        raise PlanError(f"arrays or objects nested more than {MAX_DEPTH} deep",
                        path=label, fix="a plan nests four levels: plan, steps, step, "
                        "context_files")
    # Line numbers are only for the error: the scanner is walked only when there is one
    # (on a 200-step plan it costs more than the rest of the parse together).
    try:
        plan = Plan.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        raise PlanError(f"{_place(raw, loc)}: {_reason(first)}", path=label,
                        line=jsonpos.line_of(jsonpos.lines(text), loc)) from None
    problem = _graph_problem(plan) or _pin_problem(plan, known_providers) \
        or _context_problem(plan, path.parent)
    if problem is not None:
        loc, message, fix = problem
        raise PlanError(f"{_place(raw, loc)}: {message}", path=label,
                        line=jsonpos.line_of(jsonpos.lines(text), loc), fix=fix)
    return plan


def _deeper_than(node: Any, limit: int) -> bool:
    """Whether node nests arrays and objects more than limit deep; iterative on purpose."""
    stack = [(node, 1)] if isinstance(node, dict | list) else []
    while stack:
        node, depth = stack.pop()
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


def context_text(plan_dir: Path, name: str) -> str:
    """A context file's text as given to the model; undecodable bytes are replaced."""
    data = read_bounded(plan_dir / name, MAX_CONTEXT_BYTES, truncate=True)
    return data.decode("utf-8", errors="replace")


Problem = tuple[tuple[str | int, ...], str, str | None]


def _graph_problem(plan: Plan) -> Problem | None:
    index: dict[str, int] = {}
    for i, step in enumerate(plan.steps):
        if step.id in index:
            return (("steps", i, "id"), f"duplicate step id {step.id!r} "
                    f"(first used by steps[{index[step.id]}])", "give each step its own id")
        index[step.id] = i
    for i, step in enumerate(plan.steps):
        for j, dep in enumerate(step.depends_on):
            if dep not in index:
                return (("steps", i, "depends_on", j), f"unknown step {dep!r}",
                        "depend on one of: " + ", ".join(_sample(index)))
    cycle = find_cycle({s.id: s.depends_on for s in plan.steps})
    if cycle:
        return (("steps", index[cycle[0]], "depends_on"), "dependency cycle: "
                + " → ".join(cycle), "remove one of these dependencies")
    return None


def find_cycle(depends_on: dict[str, tuple[str, ...]]) -> list[str] | None:
    """A cycle as [a, b, ..., a] where a depends on b..., or None. Iterative: plans are big."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for root in depends_on:
        if state.get(root):
            continue
        path = [root]
        stack = [iter(depends_on[root])]
        state[root] = 1
        while stack:
            dep = next(stack[-1], None)
            if dep is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            seen = state.get(dep)
            if seen == 1:
                return [*path[path.index(dep):], dep]
            if seen is None:
                state[dep] = 1
                path.append(dep)
                stack.append(iter(depends_on[dep]))
    return None


def _pin_problem(plan: Plan, known: dict[str, tuple[str, ...]] | None) -> Problem | None:
    if known is None:
        return None
    for i, step in enumerate(plan.steps):
        if step.provider is not None and step.provider not in known:
            return (("steps", i, "provider"), f"unknown provider {step.provider!r}",
                    "pin one of: " + ", ".join(sorted(known)))
        if step.model is None:
            continue
        serving = [known[step.provider]] if step.provider else list(known.values())
        if not any(step.model in models for models in serving):
            where = f"provider {step.provider!r}" if step.provider else "any provider"
            return (("steps", i, "model"), f"model {step.model!r} is not declared for {where}",
                    "use a model listed by `aetherflow providers`, or declare it (with its "
                    "price) in the config")
    return None


def _context_problem(plan: Plan, plan_dir: Path) -> Problem | None:
    inside = plan_dir.resolve()
    for i, step in enumerate(plan.steps):
        for j, name in enumerate(step.context_files):
            at = ("steps", i, "context_files", j)
            file = plan_dir / name
            try:
                resolved = file.resolve()
            except (OSError, RuntimeError):  # 3.11 raises RuntimeError on a symlink loop
                return (at, f"context file {name!r} is a symlink loop",
                        "point the link at a file, or copy the file next to the plan")
            # A planner (often a model) writes plans: it must not send ~/.ssh to a provider.
            if not resolved.is_relative_to(inside):
                return (at, f"context file {name!r} is outside the plan's folder {inside}",
                        "copy it next to the plan")
            if not file.exists():
                return (at, f"context file {name!r} not found (looked in {plan_dir})",
                        "paths are relative to the plan file")
            if not file.is_file():
                return (at, f"context file {name!r} is not a regular file",
                        "give a file: not a directory, a FIFO or a device")
    return None


def _place(raw: Any, loc: tuple[Any, ...]) -> str:
    """steps[2] "build".max_tokens — the index for machines, the id for people."""
    out = ""
    node = raw
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("id"), str) and len(loc) > 2:
                out += f" {json.dumps(node['id'])}"
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out or "the plan"


def _reason(error: dict[str, Any]) -> str:
    kind = error["type"]
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "literal_error" and error["loc"][-1] == "type":
        return f"unknown step type {error['input']!r}; use one of: {', '.join(STEP_TYPES)}"
    if kind == "literal_error" and error["loc"][-1] == "output":
        return f"unknown output {error['input']!r}; use one of: {', '.join(OUTPUTS)}"
    return f"{error['msg']} (got {json.dumps(error.get('input'), default=str)[:60]})"


def _sample(index: dict[str, int]) -> list[str]:
    ids = list(index)
    return [*ids[:8], "..."] if len(ids) > 8 else ids
