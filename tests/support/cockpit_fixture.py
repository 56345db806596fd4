"""A real engine on a temporary database with a fixed clock and known history.

Snapshot, Pilot and benchmark runs of the cockpit start from this: the embedded default
bouquet, keys in a keyring file, key checks and an hour of calls written through the
engine's own store, so every pane shows real data that never changes between runs.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from keyrings.alt.file import PlaintextKeyring

from aetherflow_tui.app import CockpitApp
from aetherflow_tui.engine import Engine, config
from aetherflow_tui.engine.approvals import OPPORTUNITY
from aetherflow_tui.engine.clock import FixedClock, local_day
from aetherflow_tui.engine.events import RegulatorDecided, SystemSampled
from aetherflow_tui.engine.keys import KeyVault, Secret
from aetherflow_tui.engine.ledger import Cost, Energy
from aetherflow_tui.engine.records import CallRecord
from aetherflow_tui.engine.regulator import SystemSample, SystemState
from aetherflow_tui.engine.store import STEP_COLUMNS, UPSERT_STEP, Store
from aetherflow_tui.engine.veille.extract import PriceQuote
from aetherflow_tui.engine.veille.item import VeilleItem
from aetherflow_tui.engine.veille.opportunity import Baseline, Candidate, Usage, assess
from aetherflow_tui.engine.veille.watch import describe_opportunity
from aetherflow_tui.engine.vigilance import RegulatorDecision

FIXED_NOW = 1_795_262_400.0  # 2026-11-21 07:20 UTC: a whole minute


def vault_in(tmp: Path) -> KeyVault:
    backend = PlaintextKeyring()
    backend.file_path = str(tmp / "keyring" / "keyring_pass.cfg")
    return KeyVault(backend=backend, environ={})


def _calls(now: float) -> list[CallRecord]:
    day = local_day(now)
    rows = []
    # groq: healthy and busy; mistral: a few calls; deepseek: failing hard.
    for i in range(24):
        ts = now - 3300 + i * 140
        rows.append(CallRecord(
            ts=ts, day=day, provider="groq", model="llama-3.3-70b-versatile", purpose="ask",
            ok=True, input_tokens=800 + 10 * i, output_tokens=300, ttft_s=0.21,
            duration_s=0.9 + (i % 5) * 0.05, tokens_per_s=320.0,
            cost=Cost((800 + 10 * i) * 0.59e-6 + 300 * 0.79e-6, "genai-prices"),
            energy=Energy(0.12, 0.046, "estimate:size")))
    for i in range(5):
        rows.append(CallRecord(
            ts=now - 1800 + i * 300, day=day, provider="mistral", model="mistral-small-latest",
            purpose="ask", ok=i != 2, input_tokens=1200, output_tokens=400, ttft_s=0.35,
            duration_s=2.4, tokens_per_s=170.0,
            cost=Cost(1200 * 0.15e-6 + 400 * 0.6e-6, "genai-prices") if i != 2
            else Cost(0.0, "not billed"),
            energy=Energy(0.31, 0.016, "ecologits") if i != 2 else Energy(None, None, "unknown"),
            error_kind=None if i != 2 else "overloaded",
            error=None if i != 2 else "mistral: the provider is failing (HTTP 503): [b]busy[/b]"))
    for i in range(4):
        rows.append(CallRecord(
            ts=now - 240 + i * 30, day=day, provider="deepseek", model="deepseek-chat",
            purpose="ask", ok=i == 0, input_tokens=900, output_tokens=250 if i == 0 else 0,
            duration_s=3.1 if i == 0 else 10.0,
            cost=Cost(900 * 0.27e-6 + 250 * 1.1e-6, "genai-prices") if i == 0
            else Cost(0.0, "not billed"),
            energy=Energy(0.2, 0.11, "estimate:size") if i == 0
            else Energy(None, None, "unknown"),
            error_kind=None if i == 0 else "timeout",
            error=None if i == 0 else "deepseek: no answer in time (ReadTimeout)"))
    return sorted(rows, key=lambda r: r.ts)


async def seed(home: Path, vault: KeyVault, now: float = FIXED_NOW) -> None:
    bouquet = config.load(None)
    engine = Engine(bouquet, home, vault=vault, clock=FixedClock(now))
    await engine.start()
    try:
        for provider in ("groq", "mistral", "deepseek"):
            vault.store(provider, Secret(f"fixture-key-for-{provider}-0123456789"))
        store = engine.store
        await store.add_key_check(now - 4000, "groq", True, "active",
                                  "activated by the operator; authenticated in 212 ms",
                                  0.212, 0.0000041, None)
        await store.add_key_check(now - 100, "mistral", True, "awaiting approval",
                                  "authenticated in 388 ms; priced from usage", 0.388,
                                  0.0000052, None)
        await store.add_key_check(now - 3000, "deepseek", True, "active",
                                  "activated by the operator", 0.5, 0.000003, None)
        await store.add_approval(now - 100, "activate_key", "Activate the new key for mistral",
                                 "sandbox test on mistral-small-latest: authenticated in "
                                 "388 ms", "route real traffic to mistral",
                                 {"provider": "mistral"})
        await asyncio.gather(*(store.record_call(row) for row in _calls(now)))
        await _seed_run(store, now)
        await _seed_veille(store, now)
    finally:
        await engine.stop()


RUN_ID = "20261121-071500-a1b2"
_PLAN_STEPS = (  # id, type, depends_on
    ("survey", "analysis", []), ("api", "code_generation", ["survey"]),
    ("ui", "prototyping", ["survey"]), ("tests", "test_generation", ["api"]),
    ("migrate", "refactoring", ["survey"]), ("docs", "documentation", ["api", "ui"]),
    ("review", "review", ["tests", "docs"]), ("release", "documentation", ["review"]),
)


async def _seed_run(store: Store, now: float) -> None:
    """A run the daily budget stopped: done, failed, skipped and pending steps."""
    plan = {"task_id": "billing-service", "steps": [
        {"id": i, "type": t, "prompt": f"do {i}", "depends_on": d} for i, t, d in _PLAN_STEPS]}
    await store.create_run(RUN_ID, "billing-service", "/work/plans/billing.json", "build",
                           now - 300, "0123456789abcdef", json.dumps(plan))
    rows = [
        ("survey", "done", "groq", "llama-3.1-8b-instant", 1, 12.0, 1500, 420, 0.000108,
         0.18, 1.6, None, "analysis: cheap, cheapest → groq/llama-3.1-8b-instant"),
        ("api", "done", "deepseek", "deepseek-chat", 2, 60.0, 3200, 1800, 0.00284, 0.9, 41.2,
         None, "code_generation: fast/code, balanced → deepseek/deepseek-chat"),
        ("ui", "done", "groq", "llama-3.3-70b-versatile", 1, 20.0, 2100, 900, 0.00195, 0.21,
         3.4, None, "prototyping: fastest → groq/llama-3.3-70b-versatile"),
        ("migrate", "failed", "mistral", "mistral-small-latest", 3, 25.0, 0, 0, 0.0, None,
         None, "mistral: the provider is failing (HTTP 503): [b]busy[/b]", None),
        ("tests", "done", "codestral", "codestral-latest", 1, 110.0, 2600, 1400, 0.00186,
         0.4, 12.8, None, "test_generation: code/qa, balanced → codestral/codestral-latest"),
        ("docs", "pending", None, None, 0, None, 0, 0, 0.0, None, None,
         "worst case $0.0210 would pass the daily budget", None),
    ]
    for (step_id, status, provider, model, attempts, started, tin, tout, usd, ttft,
         duration, error, reason) in rows:
        step_type = next(t for i, t, _ in _PLAN_STEPS if i == step_id)
        began = now - 300 + started if started is not None else None
        values = dict(zip(STEP_COLUMNS, (
            RUN_ID, step_id, status, provider, model, attempts, began,
            began + (duration or 5.0) if began and status != "pending" else None,
            f"output of {step_id}" if status == "done" else None, error, step_type, tin, tout,
            usd, ttft, duration, reason, None, "md"), strict=True))
        store.enqueue(UPSERT_STEP, tuple(values.values()))
    await store.update_run(RUN_ID, status="stopped-by-budget", mode="build",
                           finished=now - 120,
                           detail="stopped by the daily budget at step docs")


VEILLE_ITEMS = (  # source, title, label, confidence, age (s), prices
    ("groq-news", "Groq cuts Llama 3.3 70B to $0.39/M input, $0.59/M output", "price_change",
     0.93, 600, [{"provider": "groq", "model": "llama-3.3-70b-versatile",
                  "input_per_mtok": 0.39, "output_per_mtok": 0.59}]),
    ("deepseek-status", "DeepSeek: Elevated error rates on the chat API", "outage", 0.97, 1500,
     []),
    ("hostile-feed", "[bold red]FREE[/] credits [@click=app.quit]click[/] \\x1b[31m now",
     "noise", 0.71, 2400, []),
    ("mistral-news", "Mistral launches Small 3.2 at $0.10/M in and $0.30/M out", "new_offer",
     0.88, 4000, [{"provider": "mistral", "model": "mistral-small-3.2",
                   "input_per_mtok": 0.1, "output_per_mtok": 0.3}]),
    ("policy-watch", "New export controls on AI chips to China take effect in January",
     "geopolitical_risk", 0.82, 9000, []),
)


async def _seed_veille(store: Store, now: float) -> None:
    """Five classified items (one hostile) and the polls that brought them."""
    rows = [{"key": f"fixture-{n}", "title_key": title.casefold(), "source": source,
             "title": title, "summary": f"{title}. Details in the announcement.",
             "link": f"https://example.com/news/{n}", "published_ts": now - ago,
             "seen_ts": now - ago, "label": label, "confidence": confidence,
             "prices": prices}
            for n, (source, title, label, confidence, ago, prices) in enumerate(VEILLE_ITEMS)]
    ids = await store.add_veille_items(rows, title_window_s=0)
    # Gemini (no key yet) announces a price that beats what the fixture's traffic costs.
    offer = PriceQuote("gemini", "gemini-2.5-flash", 0.1, 0.4)
    report = assess(offer, Usage(1_200_000, 400_000, 0.9, 12),
                    Baseline(0.56, "$0.56/Mtok paid on average over the last 12 day(s) of "
                                   "real traffic", 1.1, 70),
                    Candidate(in_bouquet=True, model_in_bouquet=True, routable=False,
                              keyring=True, console_url="https://aistudio.google.com/apikey",
                              zone="USA", latency_s=None, params_b=None, outages_30d=0,
                              geopolitical_30d=0, other_routable=2), min_saving_pct=10)
    assert report is not None
    item = VeilleItem(ids[0], "google-ai-blog", "Gemini 2.5 Flash now $0.10/M input, $0.40/M "
                      "output", "", None, None, now - 500, "price_change", 0.91, (offer,))
    summary, evidence = describe_opportunity(item, report)
    await store.add_approval(now - 500, OPPORTUNITY, summary, evidence, report.next_step,
                             {"provider": "gemini", "model": "gemini-2.5-flash",
                              "input_per_mtok": 0.1, "output_per_mtok": 0.4,
                              "item_id": ids[0], "report": report.as_json()})
    await store.record_veille_poll("https://status.deepseek.com/api/v2/summary.json",
                                   "deepseek-status", now - 60, "not_modified", None,
                                   '"abc"', None, 0)
    await store.record_veille_poll("https://status.openai.com/api/v2/summary.json",
                                   "openai-status", now - 60, "error",
                                   "could not connect: [Errno -3] name resolution failed",
                                   None, None, 0)


# The machine over the last minute: CPU climbing into STRESSED, memory steady, no sensor.
def system_samples(now: float = FIXED_NOW, count: int = 60, *,
                   temperature: bool = True) -> list[SystemSample]:
    samples = []
    for i in range(count):
        ts = now - (count - 1 - i)
        climb = max(0, i - 30) * 2.0
        samples.append(SystemSample(
            ts=ts, cpu_pct=min(99.0, 38.0 + (i * 7) % 13 + climb),
            load_per_core=round(0.42 + climb / 100, 2), memory_pct=58.0 + i * 0.07,
            swap_pct=3.0, temperature_c=(58.0 + climb / 4) if temperature else None,
            loop_lag_ms=1.0 + (i * 5) % 3, error_rate_pct=None if i < 40 else 4.0,
            latency_p50_s=None if i < 40 else 0.92))
    return samples


def stressed_decision(now: float = FIXED_NOW, reasoning: str | None = None
                      ) -> RegulatorDecision:
    return RegulatorDecision(
        ts=now - 14, state=SystemState.STRESSED, previous=SystemState.OPTIMAL,
        confidence=0.82,
        reasoning=reasoning or ("CPU 87% (5-sample mean) is above the STRESSED threshold of "
                                "85%; memory 62%, swap 3%, event-loop lag 2 ms."),
        metrics={"cpu_pct": 87.0, "memory_pct": 62.0, "swap_pct": 3.0, "loop_lag_ms": 2.0},
        actions=("concurrency cap 4", "local inference: 7 thread(s) at 75% duty"))


def publish_system(engine: Engine, samples: list[SystemSample],
                   decision: RegulatorDecision | None = None) -> None:
    """What a running regulator would publish, through the engine's own bus."""
    for sample in samples:
        engine.bus.publish(SystemSampled(sample.ts, sample))
    if decision is not None:
        engine.bus.publish(RegulatorDecided(decision.ts, decision))


def fixture_engine(tmp: Path, now: float = FIXED_NOW) -> Engine:
    """An unstarted engine over the seeded home: the cockpit starts it in its own loop."""
    vault = vault_in(tmp)
    asyncio.run(seed(tmp / "home", vault, now))
    return Engine(config.load(None), tmp / "home", vault=vault, clock=FixedClock(now))


def fixture_app(tmp: Path) -> CockpitApp:
    return CockpitApp(fixture_engine(tmp))
