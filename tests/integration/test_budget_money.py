"""The money path against a loopback provider that keeps its own bill: what the server
billed never passes the daily budget, whatever the concurrency, the usage it reports, the
calls cut mid-way, or how many processes share the data dir."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from aetherflow_tui.engine.budget import worst_cost, worst_input_tokens
from aetherflow_tui.engine.errors import BudgetRefused, DispatchHeld
from aetherflow_tui.engine.events import StepUpdated
from aetherflow_tui.engine.progress import RunStatus, StepState
from aetherflow_tui.engine.providers.base import ChatRequest, Usage
from tests.conftest import aetherflow_cmd
from tests.support.plans import (
    bouquet,
    engine_on,
    model_entry,
    provider,
    provider_table,
    step,
    write_plan,
)

HANGING_PROMPT = "@@hang@@ a question that never gets its answer"
PRICE_IN = 10.0  # $ per million tokens
PRICE_OUT = 1200.0


def priced(url: str, **budget: float) -> str:
    return bouquet(provider("alpha", url, price_in=PRICE_IN, price_out=PRICE_OUT,
                            max_concurrency=50), max_concurrency=50, **budget)


def recorded(tmp_path: Path) -> tuple[float, int]:
    with sqlite3.connect(tmp_path / "home" / "aetherflow.db") as db:
        usd, calls = db.execute("SELECT COALESCE(SUM(usd), 0), COUNT(*) FROM calls").fetchone()
    return usd, calls


async def test_a_wide_plan_waits_for_reservations_in_flight_instead_of_stopping(server,
                                                                                 tmp_path):
    # The run: each step's worst case is ~$0.13 (100 tokens of answer and every
    # input byte a token), its real cost ~$0.03 (25 words): $0.50 affords ~16 real calls.
    # Counting the reservations in flight as spend stopped the run after 3.
    answer = " ".join(f"w{i}" for i in range(25))
    steps = [step(f"s{i:02}", f"@@say@@ SAY: {answer}", max_tokens=100) for i in range(40)]
    async with engine_on(tmp_path, priced(server.url, daily_usd=0.5)) as engine:
        waited: set[str] = set()
        updates = engine.bus.subscribe()

        async def watch() -> None:
            async for event in updates:
                if isinstance(event, StepUpdated) and event.step.state is StepState.WAITING:
                    waited.add(event.step.step_id)
                    assert (event.step.error or "").startswith("waiting for budget")

        watcher = asyncio.create_task(watch())
        run = await engine.start_run(write_plan(tmp_path / "plan.json", *steps))
        await run.wait()
        await engine.store.flush()
        watcher.cancel()
    view = run.view()
    billed = server.billed_usd(PRICE_IN, PRICE_OUT)
    spent, calls = recorded(tmp_path)
    assert view.status is RunStatus.BUDGET
    assert view.done >= 10, view.detail
    assert billed <= 0.5 and spent <= 0.5
    assert spent >= billed - 1e-9  # the ledger never counts less than the bill
    assert waited, "no step was shown waiting for budget"
    # It stopped on what was spent, with nothing else in flight: spend + one worst case.
    assert "would pass the daily budget" in view.detail and "reserved" not in view.detail
    assert calls == view.done


async def test_negative_usage_never_credits_the_budget(server, tmp_path):
    # A provider that reports negative token counts: each call counts at its bound, so the
    # calls stop before what the server billed passes $0.05.
    async with engine_on(tmp_path, priced(server.url, daily_usd=0.05)) as engine:
        spec = engine.bouquet.providers["alpha"]
        spends = []
        with pytest.raises(BudgetRefused):
            for _ in range(40):
                request = ChatRequest.ask("echo", "@@usage:-1000000:-1000000@@ tell me a story",
                                          max_tokens=20)
                outcome = await engine.settled(await engine.call(spec, request, purpose="ask"))
                assert outcome.record.cost.usd > 0 and outcome.record.usage_estimated
                spends.append(await engine.store.day_spend(engine.guard.day))
    assert len(spends) >= 2 and spends == sorted(spends)
    assert server.billed_usd(PRICE_IN, PRICE_OUT) <= 0.05
    assert recorded(tmp_path)[0] <= 0.05


async def test_usage_past_max_tokens_is_counted_within_the_calls_bounds(server, tmp_path):
    async with engine_on(tmp_path, priced(server.url, daily_usd=5.0,
                                          max_usd_per_request=1.0)) as engine:
        spec = engine.bouquet.providers["alpha"]
        request = ChatRequest.ask("echo", "@@usage:12:10000000@@ hello there", max_tokens=50)
        outcome = await engine.settled(await engine.call(spec, request, purpose="ask"))
    record = outcome.record
    assert record.ok and record.output_tokens == 50 and record.usage_estimated
    assert record.cost.usd <= 50 * PRICE_OUT / 1e6 + 1e-3  # within its worst case
    assert "outside this call's bounds" in record.error and "10000000 out" in record.error


async def test_a_stream_cut_midway_is_charged_its_input_and_what_it_delivered(server,
                                                                            tmp_path):
    async with engine_on(tmp_path, priced(server.url)) as engine:
        spec = engine.bouquet.providers["alpha"]
        request = ChatRequest.ask("echo", "one two three four five six @@broken-stream@@",
                                  max_tokens=50)
        outcome = await engine.settled(await engine.call(spec, request, purpose="ask"))
    record = outcome.record
    assert not record.ok and record.error_kind == "connection"
    assert record.cost.method == "estimated:billed-failure" and record.usage_estimated
    assert record.output_tokens > 0
    assert record.cost.usd >= server.billed_usd(PRICE_IN, PRICE_OUT) > 0


# -- several processes on one data dir -------------------------------------------------------


def _run_plan(tmp_path: Path, env: dict[str, str], name: str, steps: int,
              tz: str) -> subprocess.Popen[str]:
    plan = write_plan(tmp_path / f"{name}.json",
                      *(step(f"{name}{i:02}", f"@@slow:0.05@@ job {i} " + "pad " * 40,
                             max_tokens=40) for i in range(steps)), task_id=name)
    return subprocess.Popen([*aetherflow_cmd(), "run", str(plan), "--json"],
                            env={**env, "TZ": tz}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_several_processes_on_one_data_dir_never_pass_the_budget(server, tmp_path, cli_env):
    # Three runs at once, each wanting far more than the day: every process sees every
    # other's spend and holdings in the shared file. Two run in time zones 26 hours apart
    # (UTC+14, UTC-12): at any hour at least one of them is on another date than UTC.
    daily = 0.6
    (tmp_path / "bouquet.toml").write_text(priced(server.url, daily_usd=daily))
    cli_env["AETHERFLOW_CONFIG"] = str(tmp_path / "bouquet.toml")
    # The data dir is created first: concurrent first migrations are another issue's.
    subprocess.run([*aetherflow_cmd(), "spend"], env=cli_env, check=True, timeout=60,
                   capture_output=True)
    runs = [_run_plan(tmp_path, cli_env, name, 30, tz)
            for name, tz in (("a", "UTC"), ("b", "Pacific/Kiritimati"), ("c", "Etc/GMT+12"))]
    try:
        results = [process.communicate(timeout=300) for process in runs]
    finally:
        for process in runs:
            if process.poll() is None:
                process.kill()
    codes = [process.returncode for process in runs]
    assert set(codes) <= {0, 3} and 3 in codes, "\n".join(err for _, err in results)
    billed = server.billed_usd(PRICE_IN, PRICE_OUT)
    spent, calls = recorded(tmp_path)
    assert billed <= daily, f"billed ${billed:.4f} of ${daily} in {calls} calls"
    assert spent <= daily + 1e-9 and spent >= billed - 1e-9
    with sqlite3.connect(tmp_path / "home" / "aetherflow.db") as db:
        days = {row[0] for row in db.execute("SELECT DISTINCT day FROM calls")}
    assert days == {time.strftime("%Y-%m-%d", time.gmtime())}  # one day, UTC, for all
    assert calls >= 10  # the budget was used, not refused up front


def test_a_call_cut_by_kill_9_counts_in_spend_at_its_worst_case(server, tmp_path, cli_env):
    (tmp_path / "bouquet.toml").write_text(priced(server.url))
    cli_env["AETHERFLOW_CONFIG"] = str(tmp_path / "bouquet.toml")
    process = subprocess.Popen([*aetherflow_cmd(), "ask", "--max-tokens", "30", HANGING_PROMPT],
                               env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert server.wait_for(lambda s: s.in_flight == 1, timeout=60), "never called"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    billed = server.billed_usd(PRICE_IN, PRICE_OUT)
    spend = subprocess.run([*aetherflow_cmd(), "spend", "--json"], env=cli_env,
                           capture_output=True, text=True, timeout=60)
    assert spend.returncode == 0, spend.stderr
    assert json.loads(spend.stdout)["spent_usd"] >= billed > 0
    worst = ((worst_input_tokens(ChatRequest.ask("echo", HANGING_PROMPT)) * PRICE_IN
              + 30 * PRICE_OUT) / 1e6)
    with sqlite3.connect(tmp_path / "home" / "aetherflow.db") as db:
        rows = db.execute("SELECT error_kind, price_method, usd FROM calls").fetchall()
        (left,) = db.execute("SELECT COUNT(*) FROM reservations").fetchone()
    ((kind, method, usd),) = rows
    assert (kind, method) == ("interrupted", "estimated:worst-case")
    assert usd >= worst  # what the dead process held covers the call's worst case
    assert left == 0


async def test_a_tiered_models_reservation_prices_the_worst_case_at_its_tier(server, tmp_path):
    # gemini-2.5-pro costs more per input token past 200k: the base rate would under-count.
    text = bouquet(provider_table("gem", model_entry("gemini-2.5-pro", roles=["chat"]),
                                  base_url=server.url, key="none", price_id="google"),
                   daily_usd=100.0, max_usd_per_request=10.0)
    async with engine_on(tmp_path, text) as engine:
        spec = engine.bouquet.providers["gem"]
        model = spec.models[0]
        request = ChatRequest.ask(model.id, "@@hang@@ " + "a " * 130_000, max_tokens=100)
        call = asyncio.create_task(engine.call(spec, request, purpose="ask"))
        assert await asyncio.to_thread(server.wait_for, lambda s: s.in_flight == 1, 30)
        reserved = engine.guard.reserved  # this call's worst case, in flight
        with sqlite3.connect(tmp_path / "home" / "aetherflow.db") as db:
            ((held,),) = db.execute("SELECT usd FROM reservations").fetchall()
        worst_in = worst_input_tokens(request)
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call
        rates = engine.prices.rates(spec, model)
        tiered = engine.prices.cost(spec, model, Usage(worst_in, 100)).usd
    assert worst_in > 200_000
    assert tiered > worst_cost(rates, worst_in, 100)  # the tier matters at this size
    assert reserved == pytest.approx(tiered)
    assert held >= reserved  # what the store holds for this process covers it


def test_run_prints_the_steps_that_wait_for_budget(server, tmp_path, cli_env):
    # Worst case ~$0.13, real ~$0.03: three fit at once in $0.40, the fourth waits for them;
    # about nine of the twelve run.
    (tmp_path / "bouquet.toml").write_text(priced(server.url, daily_usd=0.4))
    cli_env["AETHERFLOW_CONFIG"] = str(tmp_path / "bouquet.toml")
    answer = " ".join(f"w{i}" for i in range(25))
    plan = write_plan(tmp_path / "plan.json", *(step(f"s{i}", f"@@say@@ SAY: {answer}",
                                                     max_tokens=100) for i in range(12)))
    done = subprocess.run([*aetherflow_cmd(), "run", str(plan)], env=cli_env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert "⧗" in done.stdout and "waiting for budget: worst case" in done.stdout
    assert done.stdout.count("✓") >= 5


async def test_what_a_process_held_is_given_back_when_it_stops(server, tmp_path):
    # A process holds a few calls' worth of the day in the store; stopping cleanly gives
    # the unused part back, so the next process does not count it as a crash's spend.
    text = priced(server.url)
    async with engine_on(tmp_path, text) as engine:
        spec = engine.bouquet.providers["alpha"]
        outcome = await engine.settled(await engine.call(
            spec, ChatRequest.ask("echo", "hello", max_tokens=20), purpose="ask"))
    async with engine_on(tmp_path, text) as engine:
        spent = await engine.store.day_spend(engine.guard.day)
    assert spent == pytest.approx(outcome.record.cost.usd)
    with sqlite3.connect(tmp_path / "home" / "aetherflow.db") as db:
        assert db.execute("SELECT COUNT(*) FROM calls WHERE error_kind = 'interrupted'"
                          ).fetchone() == (0,)


async def test_a_free_model_goes_out_without_holding_anything(server, tmp_path):
    text = bouquet(provider("free", server.url, price_in=0.0, price_out=0.0))
    async with engine_on(tmp_path, text) as engine:
        spec = engine.bouquet.providers["free"]
        outcome = await asyncio.wait_for(engine.call(
            spec, ChatRequest.ask("echo", "hello", max_tokens=20), purpose="ask"), 10)
    assert outcome.ok and outcome.record.cost.usd == 0


async def test_a_call_that_raises_outside_the_provider_releases_its_reservation(server,
                                                                             tmp_path):
    # An on_token callback (the cockpit's, the CLI's) that raises is not the provider's
    # failure, but the call's reservation must not stay held: later calls would wait on it.
    async with engine_on(tmp_path, priced(server.url)) as engine:
        spec = engine.bouquet.providers["alpha"]

        def broken(token: str) -> None:
            raise RuntimeError("the screen went away")

        with pytest.raises(RuntimeError, match="screen went away"):
            await engine.call(spec, ChatRequest.ask("echo", "hello there", max_tokens=20),
                              purpose="ask", on_token=broken)
        assert engine.guard.reserved == 0
        await engine.store.flush()
        (row,) = await engine.store.recent_calls(1)
    assert not row.ok and row.error_kind == "internal"
    assert row.cost.method == "estimated:billed-failure" and row.cost.usd > 0


async def test_an_emergency_stop_ends_a_wait_for_budget(server, tmp_path):
    # Budget for one call's worst case at a time: the second waits for the first, which
    # the server holds; the stop must end that wait, not leave it until budget frees up.
    text = bouquet(provider("alpha", server.url, price_in=1.0, price_out=100.0),
                   daily_usd=0.03)  # a worst case of ~$0.02 a call
    async with engine_on(tmp_path, text) as engine:
        spec = engine.bouquet.providers["alpha"]
        request = ChatRequest.ask("echo", "@@slow:5@@ hold", max_tokens=200)
        first = asyncio.ensure_future(engine.call(spec, request, purpose="ask"))
        while server.in_flight < 1:  # the first call is out, holding its worst case
            assert not first.done(), first.exception()
            await asyncio.sleep(0.01)
        waited: list[str | None] = []
        second = asyncio.ensure_future(engine.call(spec, request, purpose="ask",
                                                   on_wait=waited.append))
        while not waited:
            assert not second.done(), second.exception()
            await asyncio.sleep(0.01)
        await engine.emergency_stop("drill", broadcast=False)
        with pytest.raises(DispatchHeld):
            await asyncio.wait_for(second, 2)
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
