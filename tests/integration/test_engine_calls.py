"""The real engine against a real scripted provider: calls, ledger rows, events, keys."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from aetherflow_tui.engine import Engine, config
from aetherflow_tui.engine.errors import BudgetRefused, UsageError
from aetherflow_tui.engine.events import (
    ApprovalDecided,
    ApprovalRequested,
    CallRecorded,
    KeyCheckUpdated,
    KeyStateChanged,
    ProviderHealthChanged,
)
from aetherflow_tui.engine.keycheck import KeyCheckState
from aetherflow_tui.engine.keys import KeyState, KeyVault, Secret
from aetherflow_tui.engine.providers.base import ChatRequest
from tests.conftest import TEST_KEY
from tests.support.plans import scripted_bouquet


@pytest.fixture
async def engine(scripted, keyring_backend, tmp_path: Path):
    bouquet = config.parse(scripted_bouquet(scripted.url), tmp_path / "bouquet.toml")
    vault = KeyVault(backend=keyring_backend)
    vault.store("scripted", Secret(TEST_KEY))
    async with Engine(bouquet, tmp_path / "home", vault=vault) as started:
        yield started


async def test_ask_returns_a_durable_priced_row_with_energy(engine, scripted, tmp_path):
    events = engine.bus.subscribe()
    tokens: list[str] = []
    outcome = await engine.ask("hello there factory", provider="scripted",
                               on_token=tokens.append)
    assert outcome.ok
    assert outcome.result.text == "echo: hello there factory"
    assert "".join(tokens) == outcome.result.text
    record = outcome.record
    assert record.id is not None
    assert (record.input_tokens, record.output_tokens) == (3, 4)
    # price override: 3 in at $0.5/M + 4 out at $1.5/M
    assert record.cost.usd == pytest.approx((3 * 0.5 + 4 * 1.5) / 1e6)
    assert record.cost.method == "config"
    assert record.energy.method == "estimate:size"
    assert record.energy.wh > 0 and record.energy.gco2e > 0
    assert record.ttft_s is not None and record.ttft_s <= record.duration_s
    # The server saw the key from the keychain, and only there.
    assert scripted.requests[-1]["headers"]["authorization"] == f"Bearer {TEST_KEY}"
    event = events.get_nowait()
    assert isinstance(event, CallRecorded) and event.record.id == record.id

    with sqlite3.connect(tmp_path / "home" / "aetherflow.db") as db:
        row = db.execute("SELECT provider, model, ok, usd, energy_method FROM calls WHERE id=?",
                         (record.id,)).fetchone()
    assert row == ("scripted", "echo", 1, pytest.approx(record.cost.usd), "estimate:size")


async def test_the_key_never_reaches_the_database(engine, tmp_path):
    await engine.ask("one", provider="scripted")
    await engine.ask("two", provider="scripted", model="status:503")
    await engine.store.flush()
    for path in (tmp_path / "home").iterdir():
        assert TEST_KEY.encode() not in path.read_bytes(), path


async def test_a_failed_call_is_recorded_with_its_kind(engine):
    outcome = await engine.ask("x", provider="scripted", model="status:503")
    assert not outcome.ok
    assert outcome.error.kind == "overloaded"
    assert outcome.record.ok is False
    assert outcome.record.error_kind == "overloaded"
    assert outcome.record.cost.usd == 0.0 and outcome.record.cost.method == "not billed"
    totals = {t.provider: t for t in await engine.totals_today()}
    assert totals["scripted"].failures == 1


async def test_an_unpriced_model_is_refused_before_the_call(engine, scripted):
    # Its cost could be anything, so the hard limits cannot be guaranteed: no call goes out.
    # (`ask -m` refuses a model the bouquet does not declare before this, with exit 2.)
    spec = engine.provider_spec("scripted")
    with pytest.raises(BudgetRefused, match="no known price") as caught:
        await engine.call(spec, ChatRequest.ask("mystery-model-xyz", "x"), purpose="ask")
    assert caught.value.exit_code == 3
    assert "price_in" in str(caught.value)
    assert scripted.requests == []
    assert await engine.totals_today() == []


async def test_totals_today_add_up_calls(engine):
    for prompt in ("a b", "c d e", "f"):
        await engine.ask(prompt, provider="scripted")
    (totals,) = await engine.totals_today()
    assert totals.calls == 3
    assert totals.input_tokens == 2 + 3 + 1
    assert totals.usd == pytest.approx(sum(
        r.cost.usd for r in await engine.store.recent_calls(3)))


async def test_hot_path_returns_before_the_commit_and_settles_after(engine):
    spec = engine.provider_spec("scripted")
    outcome = await engine.call(spec, ChatRequest.ask("echo", "hi", stream=False),
                                purpose="test")
    assert outcome.record.id is None and outcome.record.energy is None
    settled = await engine.settled(outcome)
    assert settled.record.id is not None and settled.record.energy is not None


async def test_choose_picks_the_cheapest_tested_model(engine):
    with pytest.raises(UsageError, match="no provider has a tested key"):
        await engine.choose(None, None)  # a key straight into the keychain is untested
    check = await engine.test_key("scripted", activate=True)
    assert check.active, check.reason
    spec, model = await engine.choose(None, None)
    assert (spec.id, model.id) == ("scripted", "echo")


async def test_missing_key_is_an_operator_error_naming_the_fix(scripted, keyring_backend,
                                                               tmp_path):
    bouquet = config.parse(scripted_bouquet(scripted.url), None)
    async with Engine(bouquet, tmp_path / "home", vault=KeyVault(backend=keyring_backend)) as e:
        with pytest.raises(UsageError, match="aetherflow key set scripted"):
            await e.ask("hi", provider="scripted")
        with pytest.raises(UsageError, match="no provider has a tested key"):
            await e.ask("hi")


async def test_set_key_publishes_and_takes_effect(scripted, keyring_backend, tmp_path):
    bouquet = config.parse(scripted_bouquet(scripted.url), None)
    async with Engine(bouquet, tmp_path / "home", vault=KeyVault(backend=keyring_backend)) as e:
        events = e.bus.subscribe()
        status = await e.set_key("scripted", f"  {TEST_KEY}\n")
        assert status.state is KeyState.PRESENT
        first, second = events.get_nowait(), events.get_nowait()
        assert isinstance(first, KeyCheckUpdated) and first.check.state.value == "untested"
        assert isinstance(second, KeyStateChanged) and second.provider == "scripted"
        event = second
        assert TEST_KEY not in repr(event)
        assert (await e.ask("hi", provider="scripted")).ok
        assert await e.remove_key("scripted") is True
        views = {v.id: v for v in await e.provider_views()}
        assert views["scripted"].key.state is KeyState.MISSING


async def test_unknown_provider_lists_the_known_ones(engine):
    with pytest.raises(UsageError, match=r"unknown provider 'nope'.*scripted"):
        await engine.ask("hi", provider="nope")


async def test_env_key_is_used_when_the_config_says_so(scripted, tmp_path):
    bouquet = config.parse(scripted_bouquet(scripted.url, key="env:SCRIPTED_KEY"), None)
    vault = KeyVault(environ={"SCRIPTED_KEY": TEST_KEY})
    async with Engine(bouquet, tmp_path / "home", vault=vault) as e:
        assert (await e.ask("hi", provider="scripted")).ok


async def _drain(subscription) -> list:
    events = []
    while (event := subscription.get_nowait()) is not None:
        events.append(event)
    return events


async def test_injected_key_is_tested_then_activated_on_approval(scripted, keyring_backend,
                                                                  tmp_path):
    bouquet = config.parse(scripted_bouquet(scripted.url), None)
    async with Engine(bouquet, tmp_path / "home", vault=KeyVault(backend=keyring_backend)) as e:
        events = e.bus.subscribe()
        check = await e.inject_key("scripted", TEST_KEY)
        assert check.state is KeyCheckState.AWAITING_APPROVAL, check.reason
        assert "authenticated in" in check.reason and check.latency_s > 0
        # The sandbox call is real, and on the ledger like any other.
        (sandbox,) = await e.store.recent_calls(1)
        assert sandbox.purpose == "sandbox" and sandbox.ok
        (pending,) = await e.approvals.pending()
        assert pending.kind == "activate_key" and "scripted" in pending.summary
        assert not (await e.provider_views())[0].routable
        await e.approvals.decide(pending.id, approve=True)
        assert e.key_check("scripted").active
        assert (await e.provider_views())[0].routable
        assert await e.approvals.pending() == []
        kinds = {type(ev) for ev in await _drain(events)}
        assert {KeyCheckUpdated, ApprovalRequested, ApprovalDecided,
                ProviderHealthChanged} <= kinds
    # Activation and the queue survive a restart; the key itself never touched SQLite.
    async with Engine(bouquet, tmp_path / "home", vault=KeyVault(backend=keyring_backend)) as e:
        assert e.key_check("scripted").active
        (decided,) = [a for a in await e.store.approvals(None)]
        assert decided.status == "approved"


async def test_a_refused_key_fails_its_test_and_stays_inactive(scripted, keyring_backend,
                                                               tmp_path):
    bouquet = config.parse(scripted_bouquet(scripted.url), None)
    async with Engine(bouquet, tmp_path / "home", vault=KeyVault(backend=keyring_backend)) as e:
        check = await e.inject_key("scripted", "sk-wrong-key-000000000000")
        assert check.state is KeyCheckState.FAILED
        assert check.reason.startswith("the key was refused")
        assert await e.approvals.pending() == []
        view = (await e.provider_views())[0]
        assert not view.routable and view.health.light.value == "red"


async def test_a_rejected_activation_keeps_the_key_out_of_routing(scripted, keyring_backend,
                                                                  tmp_path):
    bouquet = config.parse(scripted_bouquet(scripted.url), None)
    async with Engine(bouquet, tmp_path / "home", vault=KeyVault(backend=keyring_backend)) as e:
        await e.inject_key("scripted", TEST_KEY)
        (pending,) = await e.approvals.pending()
        await e.approvals.decide(pending.id, approve=False)
        assert e.key_check("scripted").state is KeyCheckState.REJECTED
        with pytest.raises(UsageError, match="not pending"):
            await e.approvals.decide(pending.id, approve=True)


async def test_billed_cost_that_disagrees_with_the_price_table_fails(scripted, keyring_backend,
                                                                    tmp_path):
    bouquet = config.parse(scripted_bouquet(scripted.url), None)
    async with Engine(bouquet, tmp_path / "home", vault=KeyVault(backend=keyring_backend)) as e:
        scripted.script("billed:0.5")  # half a dollar for a dozen tokens
        check = await e.inject_key("scripted", TEST_KEY)
        assert check.state is KeyCheckState.FAILED
        assert "billed $0.50000000 but the price table says" in check.reason
        scripted.script("billed:0.0000135")  # 6 in at $0.5/M + 7 out at $1.5/M
        check = await e.test_key("scripted")
        assert check.state is KeyCheckState.AWAITING_APPROVAL, check.reason
        assert "billed cost matches" in check.reason


async def test_health_follows_real_calls(engine):
    for _ in range(3):
        await engine.ask("x", provider="scripted")
    health = engine.health.health("scripted")
    assert health.light.value == "green" and health.success_pct == 100.0
    assert health.latency_p50_s > 0
    for _ in range(3):
        await engine.ask("x", provider="scripted", model="status:503")
    health = engine.health.health("scripted")
    assert health.circuit.value == "open" and health.light.value == "red"
    assert "HTTP 503" in health.last_error


async def test_spend_view_has_an_hour_of_minutes(engine):
    await engine.ask("a b c", provider="scripted")
    view = await engine.spend_view()
    assert len(view.minutes) == 60
    assert view.minutes[-1][0] == pytest.approx(view.spent_usd)
    assert view.spent_usd > 0 and view.wh > 0 and view.budget_usd == 1.0


async def test_an_open_circuit_takes_a_provider_out_of_automatic_choice(engine):
    await engine.test_key("scripted", activate=True)
    for _ in range(3):
        await engine.ask("x", provider="scripted", model="status:503")
    assert engine.health.health("scripted").circuit.value == "open"
    with pytest.raises(UsageError, match="has an open circuit"):
        await engine.choose(None, None)
    # Named explicitly, the operator still reaches it: the probe that can close it.
    assert (await engine.ask("x", provider="scripted")).ok
    assert engine.health.health("scripted").circuit.value == "closed"
