"""Statuspage summary.json: parsing untrusted bodies and the verdict shown to the operator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aetherflow_tui.engine.statuspage import (
    MAX_COMPONENTS,
    MAX_INCIDENTS,
    MAX_TEXT,
    ComponentStatus,
    Incident,
    StatusLevel,
    StatusPageError,
    StatusReport,
    parse,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "statuspages"
SOURCE = "https://status.example.com/api/v2/summary.json"


def load(name: str) -> StatusReport:
    return parse((FIXTURES / name).read_bytes(), source=SOURCE)


def page(**overrides: object) -> bytes:
    """A minimal valid summary.json with some top-level keys replaced."""
    data: dict[str, object] = {
        "page": {"name": "Example"},
        "status": {"indicator": "none", "description": "All Systems Operational"},
    }
    data.update(overrides)
    return json.dumps(data).encode()


def every_string(report: StatusReport) -> list[str]:
    strings = [report.page, report.indicator, report.description]
    for c in report.components:
        strings += [c.name, c.status]
    for i in report.incidents:
        strings += [i.name, i.impact, i.status, *i.components]
        if i.updated_at is not None:
            strings.append(i.updated_at)
    return strings


# --- parse ------------------------------------------------------------------------------


def test_an_operational_page_parses_with_its_components():
    report = load("operational.json")

    assert report.page == "OpenAI"
    assert report.indicator == "none"
    assert report.description == "All Systems Operational"
    assert [c.name for c in report.components] == [
        "APIs", "API", "ChatGPT", "Sora", "Playground", "Fine-tuning", "Embeddings", "Batch"]
    assert {c.status for c in report.components} == {"operational"}
    assert report.incidents == ()


def test_unresolved_incidents_keep_name_impact_status_time_and_components():
    report = load("major_outage.json")

    assert report.incidents == (
        Incident("Elevated error rates", "major", "identified", "2025-06-10T13:40:02.118Z",
                 ("API", "ChatGPT")),
        Incident("Delays in fine-tuning jobs", "minor", "monitoring", "2025-06-10T12:15:00.000Z",
                 ("Fine-tuning",)),
    )


def test_resolved_and_postmortem_incidents_are_dropped():
    assert load("resolved_incident.json").incidents == ()


def test_missing_or_null_lists_are_empty():
    for body in (page(), page(components=None, incidents=None)):
        report = parse(body, source=SOURCE)
        assert (report.components, report.incidents) == ((), ())


def test_without_a_page_name_the_source_names_the_report():
    report = parse(page(page=None), source=SOURCE)

    assert report.page == SOURCE


def test_unknown_fields_are_ignored():
    body = page(status={"indicator": "none", "description": "ok", "colour": 3},
                components=[{"name": "API", "status": "operational", "weird": [1, {}]}],
                future_section={"anything": True})

    report = parse(body, source=SOURCE)

    assert report.components == (ComponentStatus("API", "operational"),)


def test_a_utf8_bom_is_accepted():
    assert parse(b"\xef\xbb\xbf" + page(), source=SOURCE).indicator == "none"


@pytest.mark.parametrize(
    ("fixture", "reason"),
    [
        ("truncated.json", "not JSON at byte 700"),
        ("list.json", "not a JSON object but a list"),
        ("no_status.json", "no 'status' object"),
        ("indicator_number.json", "'status.indicator' is a number, not a string"),
        ("component_without_status.json", "no 'components[3].status'"),
    ],
)
def test_malformed_fixtures_are_refused_with_the_reason(fixture, reason):
    with pytest.raises(StatusPageError) as caught:
        load(fixture)

    assert caught.value.reason.startswith(reason), caught.value.reason
    assert caught.value.source == SOURCE
    assert str(caught.value) == f"{caught.value.reason} from {SOURCE}"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty body"),
        (b" \n", "empty body"),
        (b'{"status": {"indicator": "none"}, x}', "not JSON at byte 34"),  # the x
        ('{"page": {"name": "café"}, ]'.encode(), "not JSON at byte 28"),  # é is 2 bytes
        (b'{"a": "\xff"}', "not UTF-8 at byte 7"),
        (b'{"status": {"indicator": "none", "description": "\x1b"}}', "not JSON at byte"),
        (b"[" * 100_000, "JSON nested too deeply"),
        (b'{"n": ' + b"9" * 5000 + b"}", "not JSON (a number too long to read)"),
        (b'"just a string"', "not a JSON object but a string"),
        (b"null", "not a JSON object but null"),
        (page(status="major"), "no 'status' object"),
        (page(status={"description": "x"}), "no 'status.indicator'"),
        (page(status={"indicator": None}), "no 'status.indicator'"),
        (page(status={"indicator": "none", "description": ["x"]}),
         "'status.description' is a list, not a string"),
        (page(page="OpenAI"), "'page' is a string, not an object"),
        (page(page={"name": 7}), "'page.name' is a number, not a string"),
        (page(components={"name": "API"}), "'components' is an object, not a list"),
        (page(components=["API"]), "'components[0]' is a string, not an object"),
        (page(components=[{"name": "API", "status": True}]),
         "'components[0].status' is a boolean, not a string"),
        (page(incidents=[{"name": "x", "status": "investigating"}]), "no 'incidents[0].impact'"),
        (page(incidents=[{"name": "x", "status": "identified", "impact": "major",
                          "updated_at": 12}]),
         "'incidents[0].updated_at' is a number, not a string"),
        (page(incidents=[{"name": "x", "status": "identified", "impact": "major",
                          "components": [{"id": "c1"}]}]),
         "no 'incidents[0].components[0].name'"),
    ],
)
def test_malformed_bodies_are_refused_with_the_reason(body, reason):
    with pytest.raises(StatusPageError) as caught:
        parse(body, source=SOURCE)

    assert caught.value.reason.startswith(reason), caught.value.reason


def test_counts_are_capped():
    components = [{"name": f"c{n}", "status": "operational"} for n in range(MAX_COMPONENTS + 50)]
    incidents = [{"name": f"i{n}", "status": "investigating", "impact": "minor"}
                 for n in range(MAX_INCIDENTS + 50)]

    report = parse(page(components=components, incidents=incidents), source=SOURCE)

    assert len(report.components) == MAX_COMPONENTS
    assert report.components[-1].name == f"c{MAX_COMPONENTS - 1}"
    assert len(report.incidents) == MAX_INCIDENTS


def test_resolved_incidents_do_not_use_up_the_incident_cap():
    resolved = [{"name": "old", "status": "resolved", "impact": "critical"}] * (MAX_INCIDENTS * 2)
    live = {"name": "live", "status": "investigating", "impact": "major"}

    report = parse(page(incidents=[*resolved, live]), source=SOURCE)

    assert [i.name for i in report.incidents] == ["live"]


# --- hostile strings --------------------------------------------------------------------


def test_hostile_strings_are_one_bounded_line_without_control_characters():
    strings = every_string(load("hostile.json"))

    assert strings
    for text in strings:
        assert len(text) <= MAX_TEXT, len(text)
        assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in text), repr(text)


def test_hostile_markup_stays_literal_text():
    report = load("hostile.json")
    names = [c.name for c in report.components]

    assert "[bold red]x[/]" in names
    assert "[@click=app.quit]Click me[/]" in names
    assert report.incidents[0].name == (
        "[link=https://evil.example]Pay here[/link] \\x1b[5mblink")
    assert report.page == "Evil\\x1b[31m [red]Status[/]"


def test_escapes_and_controls_are_shown_not_obeyed():
    report = load("hostile.json")

    assert report.description == "[bold red]Everything[/] is \\x1b[31mfine\\x1b[0m\\x07"
    assert report.components[3].name == "\\x1b[2J\\x1b[HClear\\x1b]0;pwned\\x07"
    # A newline in a name would break the one-line reason: whitespace is flattened.
    assert report.components[4].name == "bell\\x07nul\\x00del\\x7fcsi\\x9b2J second line"
    assert report.incidents[0].updated_at == "2025-06-10T14:00:00.000Z\\x1b[2K"


def test_ten_kilobyte_strings_are_truncated_with_an_ellipsis():
    report = load("hostile.json")

    assert report.components[5].name == "A" * (MAX_TEXT - 1) + "…"
    assert report.components[6].status == "x" * (MAX_TEXT - 1) + "…"
    assert report.incidents[1].name == "A" * (MAX_TEXT - 1) + "…"


# --- verdict ----------------------------------------------------------------------------


def test_all_operational():
    assert load("operational.json").verdict() == (
        StatusLevel.OPERATIONAL, "status page: All Systems Operational")


def test_one_degraded_component_degrades_the_page():
    level, reason = load("degraded_component.json").verdict()

    assert level is StatusLevel.DEGRADED
    assert reason == "status page: Minor Service Outage — Embeddings (degraded_performance)"


def test_a_filter_on_healthy_components_ignores_a_degraded_one_elsewhere():
    level, reason = load("degraded_component.json").verdict(["api", "CHATGPT"])

    assert level is StatusLevel.OPERATIONAL
    assert reason == "status page: API, ChatGPT operational"


def test_a_filter_on_the_degraded_component_sees_it():
    assert load("degraded_component.json").verdict(["embeddings"]) == (
        StatusLevel.DEGRADED,
        "status page: Degraded performance — Embeddings (degraded_performance)")


def test_a_lone_name_is_one_component_not_its_letters():
    assert load("degraded_component.json").verdict("Embeddings")[0] is StatusLevel.DEGRADED


def test_under_maintenance_is_degraded():
    report = load("maintenance.json")

    assert report.verdict()[0] is StatusLevel.DEGRADED
    assert report.verdict(["Batch"]) == (
        StatusLevel.DEGRADED, "status page: Under maintenance — Batch (under_maintenance)")


def test_major_outage_with_incidents():
    level, reason = load("major_outage.json").verdict()

    assert level is StatusLevel.OUTAGE
    assert reason == (
        "status page: Partial System Outage — APIs (major_outage), API (partial_outage), "
        "ChatGPT (major_outage) and 1 more; incidents: Elevated error rates (major), "
        "Delays in fine-tuning jobs (minor)")


def test_a_major_incident_makes_a_partial_outage_an_outage():
    level, reason = load("major_outage.json").verdict(["API"])

    assert level is StatusLevel.OUTAGE
    assert reason == (
        "status page: Partial outage — API (partial_outage); "
        "incident: Elevated error rates (major)")


def test_incidents_on_other_components_are_left_out_of_a_filtered_verdict():
    level, reason = load("major_outage.json").verdict(["Embeddings", "Batch"])

    assert level is StatusLevel.OPERATIONAL
    assert reason == "status page: Embeddings, Batch operational"


def test_an_incident_that_names_no_component_counts_for_every_filter():
    body = page(components=[{"name": "API", "status": "operational"}],
                incidents=[{"name": "Login failures", "status": "investigating",
                            "impact": "critical", "components": []}])

    assert parse(body, source=SOURCE).verdict(["API"]) == (
        StatusLevel.OUTAGE,
        "status page: API operational; incident: Login failures (critical)")


def test_a_minor_incident_degrades_operational_components():
    body = page(components=[{"name": "API", "status": "operational"}],
                incidents=[{"name": "Slow dashboard", "status": "monitoring", "impact": "minor"}])

    assert parse(body, source=SOURCE).verdict(["API"])[0] is StatusLevel.DEGRADED


def test_an_incident_with_no_impact_is_mentioned_but_changes_nothing():
    body = page(components=[{"name": "API", "status": "operational"}],
                incidents=[{"name": "Docs typo", "status": "identified", "impact": "none"}])

    assert parse(body, source=SOURCE).verdict() == (
        StatusLevel.OPERATIONAL,
        "status page: All Systems Operational; incident: Docs typo (none)")


def test_a_resolved_incident_does_not_count():
    report = load("resolved_incident.json")

    assert report.verdict() == (StatusLevel.OPERATIONAL, "status page: All Systems Operational")
    assert report.verdict(["API"]) == (StatusLevel.OPERATIONAL, "status page: API operational")


def test_a_resolved_incident_in_a_hand_built_report_does_not_count_either():
    report = StatusReport(
        page="Example", indicator="none", description="All Systems Operational",
        components=(ComponentStatus("API", "operational"),),
        incidents=(Incident("Outage", "critical", "Resolved", None),
                   Incident("Old", "major", "postmortem", None)),
    )

    assert report.verdict() == (StatusLevel.OPERATIONAL, "status page: All Systems Operational")


def test_unknown_components_fall_back_to_the_page_and_say_so():
    level, reason = load("degraded_component.json").verdict(["Whisper", "DALL-E"])

    assert level is StatusLevel.DEGRADED
    assert reason == (
        "status page: no component named 'Whisper' or 'DALL-E'; page says Minor Service Outage"
        " — Embeddings (degraded_performance)")


def test_a_partly_unknown_filter_names_the_missing_component():
    assert load("operational.json").verdict(["API", "Whisper"]) == (
        StatusLevel.OPERATIONAL, "status page: API operational; no component named 'Whisper'")


@pytest.mark.parametrize(
    ("indicator", "level"),
    [
        ("none", StatusLevel.OPERATIONAL),
        ("minor", StatusLevel.DEGRADED),
        ("maintenance", StatusLevel.DEGRADED),
        ("major", StatusLevel.OUTAGE),
        ("critical", StatusLevel.OUTAGE),
        ("CRITICAL", StatusLevel.OUTAGE),
        ("purple", StatusLevel.UNKNOWN),
    ],
)
def test_the_page_indicator_sets_the_level_without_a_filter(indicator, level):
    body = page(status={"indicator": indicator, "description": "Said the page"})

    assert parse(body, source=SOURCE).verdict() == (level, "status page: Said the page")


def test_a_page_without_description_shows_its_indicator():
    body = page(status={"indicator": "major"})

    assert parse(body, source=SOURCE).verdict() == (
        StatusLevel.OUTAGE, "status page: indicator major")


def test_an_unknown_component_status_is_unknown_but_a_known_problem_ranks_higher():
    body = page(components=[{"name": "API", "status": "on_fire"},
                            {"name": "Chat", "status": "operational"},
                            {"name": "Batch", "status": "partial_outage"}])
    report = parse(body, source=SOURCE)

    assert report.verdict(["API", "Chat"]) == (
        StatusLevel.UNKNOWN, "status page: On fire — API (on_fire)")
    assert report.verdict(["API", "Batch"])[0] is StatusLevel.DEGRADED


def test_a_hostile_page_gives_a_one_line_verdict_with_literal_markup():
    level, reason = load("hostile.json").verdict()

    assert level is StatusLevel.OUTAGE
    assert "\n" not in reason and "\x1b" not in reason
    assert reason.startswith(
        "status page: [bold red]Everything[/] is \\x1b[31mfine\\x1b[0m\\x07 — "
        "[bold red]x[/] (major_outage), [@click=app.quit]Click me[/] (partial_outage), ")
    assert ("incidents: [link=https://evil.example]Pay here[/link] \\x1b[5mblink (critical)"
            in reason)
    assert len(reason) < 2_000
