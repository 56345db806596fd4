"""The plan scheduler on the real engine, against scripted providers on 127.0.0.1.

Each step's prompt carries its provider behaviour (`@@slow:0.3@@`, `@@say@@ SAY: ...`), so
concurrent requests each do what their step needs. Timings come from the steps' own
timestamps and from what the server saw; synchronisation is on run.wait(), engine events
and server state, never on sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from pathlib import Path

import pytest

from aetherflow_tui.engine import Engine, PlanRun
from aetherflow_tui.engine.events import StepUpdated
from aetherflow_tui.engine.health import CircuitState
from aetherflow_tui.engine.progress import RunStatus, StepState
from tests.support.plans import (
    bouquet,
    calls_per_step,
    chat_requests,
    engine_on,
    provider,
    step,
    step_of,
    tables,
    user_text,
    write_plan,
)
from tests.support.scripted_server import ScriptedServer


async def finish(engine: Engine, tmp_path: Path, *steps: dict, **kw) -> PlanRun:
    run = await engine.start_run(write_plan(tmp_path / "plan.json", *steps), **kw)
    await run.wait()
    return run


def states(run: PlanRun) -> dict[str, StepState]:
    return {s.step_id: s.state for s in run.steps()}


async def server_reaches(server: ScriptedServer, predicate, timeout: float = 10.0) -> None:
    """Wait, off the event loop, until the server's state satisfies predicate."""
    assert await asyncio.to_thread(server.wait_for, predicate, timeout), "server state not reached"


# -- parallelism ---------------------------------------------------------------------------


async def test_a_wide_diamond_takes_its_critical_path_not_the_sum(server, tmp_path):
    wide = [f"b{i}" for i in range(8)]
    async with engine_on(tmp_path, bouquet(provider("alpha", server.url))) as engine:
        started = time.perf_counter()
        run = await finish(engine, tmp_path,
                           step("a", "@@slow:0.3@@ survey"),
                           *(step(b, f"@@slow:0.3@@ part {b}", "a") for b in wide),
                           step("d", "@@slow:0.3@@ assemble", *wide))
        wall = time.perf_counter() - started
    assert run.view().status is RunStatus.DONE
    steps = {s.step_id: s for s in run.steps()}
    sequential = sum(s.duration_s for s in steps.values())
    assert sequential >= 10 * 0.3
    assert wall < 0.6 * sequential, (wall, sequential)
    # The eight middle steps really overlapped: each started before any of them finished.
    assert max(steps[b].started for b in wide) < min(steps[b].finished for b in wide)
    assert steps["d"].started >= max(steps[b].finished for b in wide)
    assert server.max_in_flight == 8


async def test_a_dependent_starts_when_its_own_dependency_finishes(server, tmp_path):
    # Levels would be {a, c}, {b}, {d}: a level scheduler holds b and d until slow c ends.
    async with engine_on(tmp_path, bouquet(provider("alpha", server.url))) as engine:
        run = await finish(engine, tmp_path,
                           step("a", "@@ok@@ first"), step("b", "@@ok@@ second", "a"),
                           step("d", "@@ok@@ third", "b"), step("c", "@@slow:0.8@@ long"))
    assert run.view().status is RunStatus.DONE
    s = {v.step_id: v for v in run.steps()}
    assert s["b"].started >= s["a"].finished and s["d"].started >= s["b"].finished
    assert s["d"].started - s["b"].finished < 0.2
    assert s["d"].finished < s["c"].finished - 0.3, "d waited for the slow branch"
    # The server agrees: d's request arrived while c's was still being answered.
    received = {step_of(r): r["received"] for r in chat_requests(server.requests)}
    assert received["d"] < s["c"].finished - 0.3


async def test_dependency_outputs_are_passed_to_dependents(server, tmp_path):
    async with engine_on(tmp_path, bouquet(provider("alpha", server.url))) as engine:
        run = await finish(engine, tmp_path,
                           step("facts", "@@say@@ SAY: the answer is marker-7f3a"),
                           step("other", "@@say@@ SAY: unrelated-2b"),
                           step("use", "@@ok@@ build on them", "facts", "other",
                                type="documentation"))
    assert run.view().status is RunStatus.DONE
    assert run.outputs()["facts"] == "the answer is marker-7f3a"
    (request,) = [r for r in chat_requests(server.requests) if step_of(r) == "use"]
    text = user_text(request)
    assert "## Output of step facts (analysis)\n\nthe answer is marker-7f3a\n" in text
    assert "## Output of step other (analysis)\n\nunrelated-2b\n" in text
    assert text.index("marker-7f3a") < text.index("## Your step: use")


# -- failures, retries, fallback, circuit --------------------------------------------------


async def test_a_failed_step_skips_its_dependents_and_the_other_branch_finishes(server,
                                                                                tmp_path):
    async with engine_on(tmp_path, bouquet(provider("alpha", server.url))) as engine:
        run = await finish(engine, tmp_path,
                           step("a", "@@status:400@@ broken"), step("b", "@@ok@@ b", "a"),
                           step("c", "@@ok@@ c", "b"), step("x", "@@ok@@ x"),
                           step("y", "@@ok@@ y", "x"), step("z", "@@ok@@ z", "x", "b"))
        rows = {r["step_id"]: r for r in await engine.store.steps(run.run_id)}
    view = run.view()
    assert view.status is RunStatus.FAILED
    assert (view.done, view.failed, view.skipped) == (2, 1, 3)
    assert states(run) == {"a": "failed", "b": "skipped", "c": "skipped", "x": "done",
                           "y": "done", "z": "skipped"}
    assert "HTTP 400" in run.step("a").error
    for skipped in "bcz":
        assert run.step(skipped).error == "skipped: a failed"
        assert rows[skipped]["status"] == "skipped"
    # Skipped steps never reached a provider; the rejected call was not retried.
    assert calls_per_step(server.requests) == {"a": 1, "x": 1, "y": 1}


async def test_retry_waits_for_retry_after(server, tmp_path):
    server.script("status:429:1")
    async with engine_on(tmp_path, bouquet(provider("alpha", server.url))) as engine:
        run = await finish(engine, tmp_path, step("only", "@@ok@@ go"))
        calls = await engine.store.run_calls(run.run_id)
    assert run.view().status is RunStatus.DONE
    first, second = chat_requests(server.requests)
    assert second["received"] - first["received"] >= 0.95  # backoff_s alone is 0.01
    assert [(c.ok, c.error_kind) for c in calls] == [(False, "rate_limited"), (True, None)]
    assert run.step("only").attempts == 2


async def test_a_retry_after_too_long_to_wait_goes_to_the_next_provider(server, tmp_path):
    server.script("status:429:30")
    text = bouquet(provider("cheap", server.url, price_in=0.05),
                   provider("dear", server.url, price_in=0.5), max_retry_wait_s=2)
    async with engine_on(tmp_path, text) as engine:
        started = time.perf_counter()
        run = await finish(engine, tmp_path, step("only", "@@ok@@ go"))
    assert time.perf_counter() - started < 5
    only = run.step("only")
    assert only.state is StepState.DONE and only.provider == "dear"


async def test_a_failing_provider_falls_back_to_the_next_and_the_routes_say_why(server,
                                                                                tmp_path):
    # No directive in the prompt: the model id decides, and "status:503" always fails.
    # passive_failures = 2: the circuit tolerates one 503, so the retry in place happens.
    text = bouquet(provider("sick", server.url, "status:503", price_in=0.01),
                   provider("well", server.url, price_in=0.5), retries=1)
    text = tables(health={"passive_failures": 2}) + text
    async with engine_on(tmp_path, text) as engine:
        run = await finish(engine, tmp_path, step("s", "summarise the notes"))
        routes = await engine.store.routes(run.run_id)
        calls = await engine.store.run_calls(run.run_id)
        (row,) = await engine.store.steps(run.run_id)
    s = run.step("s")
    assert s.state is StepState.DONE and (s.provider, s.model) == ("well", "echo")
    assert (row["status"], row["provider"]) == ("done", "well")
    assert [(c.provider, c.error_kind) for c in calls] == [
        ("sick", "overloaded"), ("sick", "overloaded"), ("well", None)]
    assert [(r["step_id"], r["attempt"], r["provider"]) for r in routes] == [
        ("s", 1, "sick"), ("s", 3, "well")]
    first, second = (r["reason"] for r in routes)
    assert "→ sick/status:503" in first and "1 fallback(s)" in first
    assert "→ well/echo" in second and "1 excluded" in second


async def test_real_traffic_stops_at_the_first_outage_error(server, tmp_path):
    # The default passive_failures = 1: one 503 opens the circuit the moment it comes
    # back, so even the retry in place is not sent; every step goes to well.
    text = bouquet(provider("sick", server.url, "status:503", price_in=0.01),
                   provider("well", server.url, "slow:0.2", price_in=0.5), retries=2)
    async with engine_on(tmp_path, text) as engine:
        run = await finish(engine, tmp_path, step("s1", "first"), step("s2", "second", "s1"),
                           step("s3", "third", "s1"))
        routes = await engine.store.routes(run.run_id)
        circuit = engine.health.circuit("sick").state
    assert run.view().status is RunStatus.DONE
    assert circuit is CircuitState.OPEN
    models = [r["body"]["model"] for r in chat_requests(server.requests)]
    assert models.count("status:503") == 1  # s1's first attempt, and nothing after it
    later = [(r["step_id"], r["provider"]) for r in routes if r["step_id"] != "s1"]
    assert sorted(later) == [("s2", "well"), ("s3", "well")]
    assert {s.step_id: s.provider for s in run.steps()} == {"s1": "well", "s2": "well",
                                                            "s3": "well"}


async def test_a_lone_provider_is_retried_in_place_after_a_5xx(server, tmp_path):
    # The 503 opens the circuit (passive_failures = 1), but there is nowhere to fall back
    # to: the documented retries happen on the same candidate.
    server.script("status:503")
    async with engine_on(tmp_path, bouquet(provider("alone", server.url), retries=2)) as engine:
        run = await finish(engine, tmp_path, step("only", "@@ok@@ go"))
        calls = await engine.store.run_calls(run.run_id)
    assert run.view().status is RunStatus.DONE
    assert [(c.ok, c.error_kind) for c in calls] == [(False, "overloaded"), (True, None)]
    assert run.step("only").attempts == 2
    assert engine.health.circuit("alone").state is CircuitState.CLOSED


async def test_a_lone_provider_retry_waits_for_a_503_retry_after(server, tmp_path):
    server.script("status:503:1")
    async with engine_on(tmp_path, bouquet(provider("alone", server.url))) as engine:
        run = await finish(engine, tmp_path, step("only", "@@ok@@ go"))
    assert run.view().status is RunStatus.DONE
    first, second = chat_requests(server.requests)
    assert second["received"] - first["received"] >= 0.95  # backoff_s alone is 0.01


async def test_a_lone_provider_gives_up_after_its_retries(server, tmp_path):
    server.script("status:503", "status:503", "status:503")
    async with engine_on(tmp_path, bouquet(provider("alone", server.url), retries=2)) as engine:
        run = await finish(engine, tmp_path, step("only", "@@ok@@ go"))
    assert run.step("only").state is StepState.FAILED
    assert "HTTP 503" in run.step("only").error
    assert len(chat_requests(server.requests)) == 3


@pytest.mark.parametrize(("behaviour", "kind", "reason"), [
    ("endless", "timeout", "0.5 s deadline_s"),
    ("keepalive", "timeout", "0.5 s deadline_s"),
    ("trickle", "timeout", "0.5 s deadline_s"),
    ("hugeline:4194304", "malformed", "line too long"),
])
async def test_a_hostile_provider_is_a_recorded_failure_and_the_step_falls_back(
        server, tmp_path, behaviour, kind, reason):
    text = bouquet(provider("hostile", server.url, behaviour, price_in=0.01, deadline_s=0.5),
                   provider("well", server.url, price_in=0.5))
    async with engine_on(tmp_path, text) as engine:
        started = time.perf_counter()
        async with asyncio.timeout(10):
            run = await finish(engine, tmp_path, step("s", "summarise the notes"))
        wall = time.perf_counter() - started
        calls = await engine.store.run_calls(run.run_id)
    s = run.step("s")
    assert s.state is StepState.DONE and s.provider == "well"
    assert [(c.provider, c.ok, c.error_kind) for c in calls] == [
        ("hostile", False, kind), ("well", True, None)]
    assert reason in calls[0].error
    assert wall < 5


async def test_a_stream_far_past_max_tokens_is_cut_at_max_tokens(server, tmp_path):
    async with engine_on(tmp_path, bouquet(provider("alpha", server.url))) as engine:
        run = await finish(engine, tmp_path,
                           step("s", "@@flood:500000@@ go", max_tokens=16))
        calls = await engine.store.run_calls(run.run_id)
    assert run.view().status is RunStatus.DONE
    assert run.outputs()["s"] == "flood" + " flood" * 15
    assert [c.output_tokens for c in calls] == [16]


# -- concurrency limits --------------------------------------------------------------------


async def test_the_global_cap_bounds_calls_in_flight(server, tmp_path):
    text = bouquet(provider("alpha", server.url), max_concurrency=3)
    async with engine_on(tmp_path, text) as engine:
        started = time.perf_counter()
        run = await finish(engine, tmp_path,
                           *(step(f"s{i:02}", f"@@slow:0.2@@ job {i}") for i in range(12)))
        wall = time.perf_counter() - started
    assert run.view().status is RunStatus.DONE
    assert server.max_in_flight == 3
    assert wall >= 4 * 0.2


async def test_set_concurrency_takes_effect_during_a_run(server, tmp_path):
    text = bouquet(provider("alpha", server.url), max_concurrency=2)
    async with engine_on(tmp_path, text) as engine:
        run = await engine.start_run(write_plan(
            tmp_path / "plan.json", *(step(f"s{i}", f"@@slow:0.4@@ job {i}") for i in range(10))))
        await server_reaches(server, lambda s: s.in_flight == 2)
        assert server.max_in_flight == 2
        engine.set_concurrency(6, "test: more")
        await server_reaches(server, lambda s: s.in_flight == 6)
        engine.set_concurrency(1, "test: less")
        lowered_at = len(server.requests)
        await run.wait()
    assert run.view().status is RunStatus.DONE
    held = [r["in_flight"] for r in server.requests]
    assert max(held) == 6
    # Calls already out finish; after lowering, new ones go one at a time.
    assert held[lowered_at:] and all(n == 1 for n in held[lowered_at:])


async def test_a_provider_max_concurrency_is_honoured(server, tmp_path):
    text = bouquet(provider("alpha", server.url, max_concurrency=2), max_concurrency=64)
    async with engine_on(tmp_path, text) as engine:
        run = await finish(engine, tmp_path,
                           *(step(f"s{i}", f"@@slow:0.2@@ job {i}") for i in range(8)))
    assert run.view().status is RunStatus.DONE
    assert server.max_in_flight == 2


async def test_the_eta_is_the_remaining_chain_at_the_live_latency(server, tmp_path):
    # A chain of six 0.4 s calls, and eight 0.4 s calls fanning out of its second step.
    # When c3 starts, 1.6 s of chained work is left; the fan-out adds 3.2 s of work, but
    # all of it in parallel with the chain.
    chain = [f"c{i}" for i in range(1, 7)]
    steps = [step(c, f"@@slow:0.4@@ link {c}", *chain[i - 1:i]) for i, c in enumerate(chain)]
    steps += [step(f"p{i}", f"@@slow:0.4@@ part {i}", "c2") for i in range(8)]
    async with engine_on(tmp_path, bouquet(provider("alpha", server.url))) as engine:
        events = engine.bus.subscribe()
        run = await engine.start_run(write_plan(tmp_path / "plan.json", *steps))
        async with asyncio.timeout(10):
            while True:
                event = await events.get()
                if (isinstance(event, StepUpdated) and event.step.step_id == "c3"
                        and event.step.state is StepState.RUNNING):
                    break
        eta, at = run.view().eta_s, time.perf_counter()
        await run.wait()
        left = time.perf_counter() - at
    assert run.view().status is RunStatus.DONE
    assert left >= 4 * 0.4
    assert eta is not None and 0.6 * left <= eta <= 1.4 * left, (eta, left)


async def test_a_provider_rpm_holds_the_calls_over_its_quota(server, tmp_path):
    text = bouquet(provider("alpha", server.url, rpm=2))
    async with engine_on(tmp_path, text) as engine:
        events = engine.bus.subscribe()
        run = await engine.start_run(write_plan(
            tmp_path / "plan.json", *(step(f"s{i}", f"@@ok@@ job {i}") for i in range(3))))
        done: set[str] = set()
        async with asyncio.timeout(10):
            while len(done) < 2:
                event = await events.get()
                if isinstance(event, StepUpdated) and event.step.state is StepState.DONE:
                    done.add(event.step.step_id)
        # The third call would be the third in a minute: it must not go out now.
        assert not await asyncio.to_thread(
            server.wait_for, lambda s: len(chat_requests(s.requests)) > 2, 0.5)
        (waiting,) = [s for s in run.steps() if s.step_id not in done]
        assert waiting.state is StepState.RUNNING
        run.cancel()
        await run.wait()
        calls = await engine.store.run_calls(run.run_id)
    assert run.step(waiting.step_id).state is StepState.CANCELLED
    assert sorted(c.step_id for c in calls) == sorted(done)  # it never reached the provider


async def test_calls_held_by_one_provider_rpm_do_not_starve_the_others(server, tmp_path):
    # Two slots in all; "limited" takes one call a minute. Its second and third steps wait
    # for its quota, and must not sit on the global slots while they do.
    text = bouquet(provider("limited", server.url, rpm=1), provider("open", server.url),
                   max_concurrency=2)
    async with engine_on(tmp_path, text) as engine:
        events = engine.bus.subscribe()
        run = await engine.start_run(write_plan(
            tmp_path / "plan.json", *(step(f"l{i}", f"@@ok@@ job {i}", provider="limited")
                                      for i in range(3)),
            step("o", "@@ok@@ elsewhere", provider="open")))
        finished: set[str] = set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                while not {"l0", "o"} <= finished:
                    event = await events.get()
                    if isinstance(event, StepUpdated) and event.step.state.finished:
                        finished.add(event.step.step_id)
        run.cancel()
        await run.wait()
    assert {"l0", "o"} <= finished, "the open provider's step waited behind the rpm quota"
    assert states(run) == {"l0": "done", "l1": "cancelled", "l2": "cancelled", "o": "done"}


# -- cancellation and resume ---------------------------------------------------------------


async def test_cancel_cuts_calls_in_flight_then_resume_finishes(server, tmp_path):
    async with engine_on(tmp_path, bouquet(provider("alpha", server.url))) as engine:
        plan = write_plan(tmp_path / "plan.json",
                          step("h1", "@@hang@@ one"), step("h2", "@@slow:30@@ two"),
                          step("p", "@@ok@@ after one", "h1"), step("q", "@@ok@@ after two", "h2"))
        run = await engine.start_run(plan)
        await server_reaches(server, lambda s: s.in_flight == 2)
        run.cancel()
        view = await run.wait()
        calls = await engine.store.run_calls(run.run_id)
        rows = {r["step_id"]: r for r in await engine.store.steps(run.run_id)}
        (stored,) = [r for r in await engine.runs() if r["id"] == run.run_id]

        assert view.status is RunStatus.CANCELLED and stored["status"] == "cancelled"
        assert states(run) == {"h1": "cancelled", "h2": "cancelled", "p": "pending",
                               "q": "pending"}
        assert run.step("h1").error == "cancelled by the operator"
        assert sorted((c.step_id, c.ok, c.error_kind) for c in calls) == [
            ("h1", False, "cancelled"), ("h2", False, "cancelled")]
        assert {k: r["status"] for k, r in rows.items()} == {"h1": "cancelled",
                                                              "h2": "cancelled"}

        # The cut steps answer this time. A dependent may overtake the other cut step, so
        # every request of the resumed run takes an "ok" off the queue.
        server.script("ok", "ok", "ok", "ok")
        resumed = await engine.start_run(plan, resume=run.run_id)
        assert resumed.run_id == run.run_id
        async with asyncio.timeout(10):  # a step that got its slow prompt again would take 30
            final = await resumed.wait()
    assert final.status is RunStatus.DONE
    assert calls_per_step(server.requests) == {"h1": 2, "h2": 2, "p": 1, "q": 1}


async def test_resume_runs_only_what_did_not_finish(server, tmp_path):
    server.script("ok", "status:400")  # a, then b: b fails and c is skipped
    async with engine_on(tmp_path, bouquet(provider("alpha", server.url))) as engine:
        plan = write_plan(tmp_path / "plan.json", step("a", "@@ok@@ a"),
                          step("b", "@@ok@@ b", "a"), step("c", "@@ok@@ c", "b"))
        first = await engine.start_run(plan)
        assert (await first.wait()).status is RunStatus.FAILED
        resumed = await engine.start_run(plan, resume=first.run_id)
        view = await resumed.wait()
        rows = await engine.store.steps(first.run_id)
    assert view.status is RunStatus.DONE
    assert calls_per_step(server.requests) == {"a": 1, "b": 2, "c": 1}
    assert resumed.outputs()["a"] == first.outputs()["a"]
    assert sorted((r["step_id"], r["status"]) for r in rows) == [
        ("a", "done"), ("b", "done"), ("c", "done")]


# -- the budget ----------------------------------------------------------------------------


async def test_a_hundred_steps_at_once_never_pass_the_daily_budget(server, tmp_path):
    # Input is free and each answer is exactly max_tokens (100) words, so every call's
    # worst case and real cost are both $0.001: $0.0105 a day fits ten calls, not eleven.
    words = " ".join(["word"] * 120)
    text = bouquet(provider("alpha", server.url, price_in=0.0, price_out=10.0,
                            max_concurrency=200),
                   daily_usd=0.0105, max_concurrency=200)
    async with engine_on(tmp_path, text) as engine:
        run = await finish(engine, tmp_path,
                           *(step(f"s{i:03}", f"@@slow:0.5@@ {words}", max_tokens=100)
                             for i in range(100)))
        await engine.store.flush()
        day_spend = await engine.store.day_spend(engine.guard.day)
    view = run.view()
    with sqlite3.connect(tmp_path / "home" / "aetherflow.db") as db:
        (spent, calls) = db.execute("SELECT SUM(usd), COUNT(*) FROM calls").fetchone()
    assert spent <= 0.0105 and day_spend <= 0.0105
    assert calls == 10 and spent == pytest.approx(0.010)
    assert server.max_in_flight == 10  # the ten that fit went out together
    assert view.status is RunStatus.BUDGET
    assert (view.done, view.pending) == (10, 90)
    assert "daily budget" in view.detail


async def test_a_hundred_calls_can_be_in_flight_on_one_provider(server, tmp_path):
    text = bouquet(provider("alpha", server.url, max_concurrency=200), max_concurrency=200)
    async with engine_on(tmp_path, text) as engine:
        run = await finish(engine, tmp_path,
                           # Long enough that the last leaves before the first is back,
                           # on a busy 2-core machine too.
                           *(step(f"s{i:03}", f"@@slow:1.5@@ job {i}") for i in range(100)))
    assert run.view().status is RunStatus.DONE
    assert server.max_in_flight == 100


# -- output checks -------------------------------------------------------------------------


async def test_json_outputs_are_checked_repaired_once_and_json_mode_is_asked(server,
                                                                              tmp_path):
    text = bouquet(provider("jsonful", server.url),
                   provider("jsonless", server.url, "plain", json_mode=False))
    out = tmp_path / "out"
    async with engine_on(tmp_path, text) as engine:
        run = await finish(
            engine, tmp_path,
            step("good", '@@say@@ SAY: {"a": [1, 2]}', output="json", provider="jsonful"),
            step("bad", '@@say@@ SAY: {"a": oops', output="json", provider="jsonful"),
            step("prose", "@@ok@@ words", provider="jsonful"),
            step("nojs", '@@say@@ SAY: {"b": true}', output="json", provider="jsonless"),
            output_dir=out)
    assert states(run) == {"good": "done", "bad": "failed", "prose": "done", "nojs": "done"}
    assert run.outputs()["good"] == '{"a": [1, 2]}'
    assert (out / "good.json").read_text() == '{"a": [1, 2]}'
    bad = run.step("bad").error
    assert bad.startswith("output rejected: invalid JSON") and "after one repair attempt" in bad
    requests = chat_requests(server.requests)
    by_step = {step_of(r): r["body"] for r in requests if step_of(r)}
    assert by_step["good"]["response_format"] == {"type": "json_object"}
    assert "response_format" not in by_step["prose"]
    assert "response_format" not in by_step["nojs"]  # the provider has no JSON mode
    (repair,) = [r["body"] for r in requests if step_of(r) is None]
    assert [m["role"] for m in repair["messages"]] == ["system", "user", "assistant", "user"]
    assert repair["messages"][2]["content"] == '{"a": oops'
    assert "not valid JSON" in repair["messages"][3]["content"]
    assert repair["response_format"] == {"type": "json_object"}
    assert run.step("bad").attempts == 2  # the call and exactly one repair


async def test_double_check_audits_on_another_provider_and_flags_disagreement(server,
                                                                              tmp_path):
    # The audit prompt quotes the step's prompt and then its answer; "/SAY" ends what the
    # auditor says, so the verdict it returns is the one the step's prompt spells out.
    no = '{"agree": false, "problems": ["x"]}'
    yes = '{"agree": true, "problems": []}'
    text = bouquet(provider("worker", server.url, "w", price_in=0.01),
                   provider("auditor", server.url, "a", price_in=0.5))
    async with engine_on(tmp_path, text) as engine:
        run = await finish(engine, tmp_path, step("doubted", f"@@say@@ SAY: {no} /SAY"),
                           step("trusted", f"@@say@@ SAY: {yes} /SAY"), mode="double-check")
        rows = {r["step_id"]: r for r in await engine.store.steps(run.run_id)}
    assert run.view().status is RunStatus.DONE
    doubted, trusted = run.step("doubted"), run.step("trusted")
    assert doubted.flag == "auditor/a disagrees: x" and rows["doubted"]["flag"] == doubted.flag
    assert trusted.flag is None
    # The step's provider is the one that did the work, not its auditor.
    assert (doubted.provider, doubted.model) == ("worker", "w")
    assert rows["doubted"]["provider"] == "worker"
    bodies = [r["body"] for r in chat_requests(server.requests)]
    work = [b for b in bodies if b["messages"][-1]["content"].startswith("## Your step")]
    audits = [b for b in bodies if b not in work]
    assert {b["model"] for b in work} == {"w"} and len(work) == 2
    assert {b["model"] for b in audits} == {"a"} and len(audits) == 2
    assert all(b.get("response_format") == {"type": "json_object"} for b in audits)


async def test_a_budget_refusal_of_the_repair_call_stops_the_run(server, tmp_path):
    # The first call ($0.0001 worst, $0.000003 real) fits $0.000101; the repair's worst
    # case on top of it does not.
    text = bouquet(provider("alpha", server.url, price_in=0.0, price_out=1.0),
                   daily_usd=0.000101)
    async with engine_on(tmp_path, text) as engine:
        run = await finish(engine, tmp_path,
                           step("j", '@@say@@ SAY: {"a": oops', output="json", max_tokens=100))
    view = run.view()
    assert view.status is RunStatus.BUDGET, run.step("j").error
    assert run.step("j").state is StepState.PENDING
    assert "internal error" not in (view.detail or "") + (run.step("j").error or "")


async def test_run_json_summary_file_lists_every_step(server, tmp_path):
    out = tmp_path / "out"
    async with engine_on(tmp_path, bouquet(provider("alpha", server.url))) as engine:
        run = await finish(engine, tmp_path, step("a", "@@say@@ SAY: alpha"),
                           step("b", "@@status:400@@ x", "a"), output_dir=out)
    summary = json.loads((out / "run.json").read_text())
    assert summary["run_id"] == run.run_id and summary["status"] == "failed"
    assert [(s["id"], s["status"]) for s in summary["steps"]] == [("a", "done"),
                                                                   ("b", "failed")]
    assert summary["steps"][0]["output"] == "alpha"
    assert sorted(p.name for p in out.iterdir()) == ["a.md", "run.json"]
