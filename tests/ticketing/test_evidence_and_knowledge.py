"""Evidence summaries and the knowledge base."""

import pytest

from gateway.core.errors import ConfigError
from gateway.core.records import Sample
from gateway.ticketing.evidence import (
    MAX_TAGS_IN_SNAPSHOT,
    TelemetryWindow,
    compare_to_baseline,
    signal_first,
    trend,
)
from gateway.ticketing.knowledge import KnowledgeBase
from tests.support.site import REPO


def test_summary_is_min_mean_max_last_count_and_trend_over_the_window_only():
    window = TelemetryWindow(window_s=60)
    window.add([Sample("t", ts, v) for ts, v in [(0, 100.0), (70, 10.0), (80, 20.0), (90, 30.0)]])
    window.add([Sample.bad("t", 95, "timeout")])
    summary = window.summary(["t", "missing"], now=90)
    assert summary == {
        "t": {
            "min": 10.0,
            "mean": 20.0,
            "max": 30.0,
            "last": 30.0,
            "count": 3,
            "trend": "rising",
            "window_s": 60,
        }
    }
    assert window.means(["t"], before=85) == {"t": 15.0}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([50.0, 50.1, 49.9, 50.0], "steady"),
        ([50.0, 45.0, 40.0, 35.0], "falling"),
        ([0.0, 1.0, 2.0, 3.0], "rising"),
        ([1.0, 2.0], "steady"),
    ],
)
def test_trend(values, expected):
    assert trend([(float(i), v) for i, v in enumerate(values)]) == expected


def test_baseline_comparison_within_a_relative_tolerance():
    passed, figures = compare_to_baseline({"a": 60.0, "b": 0.0}, {"a": 66.0, "b": 0.1}, 0.15)
    assert passed and figures["a"] == {"before": 60.0, "after": 66.0, "within": True}
    failed, figures = compare_to_baseline({"a": 60.0}, {"a": 75.0}, 0.15)
    assert not failed and figures["a"]["within"] is False


def test_shipped_knowledge_base_matches_most_specific_first():
    kb = KnowledgeBase.load(REPO / "configs" / "knowledge.yaml")
    pump = kb.recommend("bearing.outer_race", "pump")
    assert "lubrication" in pump[0]["actions"][0]
    assert "replacement" in pump[0]["actions"][1]
    assert pump[1]["fault_code"] == "bearing.*"  # the family entry comes after
    assert kb.recommend("bearing.cage", "fan")[0]["fault_code"] == "bearing.*"
    can = kb.recommend("comm.lost", "can")
    assert "120 ohm termination" in can[0]["actions"][0] and "shield" in can[0]["actions"][0]
    assert kb.recommend("sensor.stuck", "pump") == []


def test_every_problem_of_a_knowledge_file_is_reported_at_once():
    with pytest.raises(ConfigError) as caught:
        KnowledgeBase.from_document(
            {
                "entries": [
                    {"fault_code": "x", "actions": []},
                    {"actions": ["a"]},
                    {"fault_code": "y", "actions": ["a"], "colour": "red"},
                ]
            },
            "k.yaml",
        )
    assert [str(p) for p in caught.value.problems] == [
        "k.yaml: entries.0.actions: must be a non-empty text list",
        "k.yaml: entries.1.fault_code: is required",
        "k.yaml: entries.2.colour: unknown key `colour`",
    ]


def test_the_signal_and_its_derived_tags_lead_a_summary_of_more_tags_than_it_shows():
    # 20 scalar tags, then the features a vibration detector derives from its waveform `w`:
    # a finding on `w` shows its features, a finding on `t19` shows `t19`, whatever the cap.
    tags = [f"a.t{n}" for n in range(20)] + ["a.w.rms", "a.w.kurtosis"]
    window = TelemetryWindow(window_s=60)
    window.add([Sample(tag, ts, 1.0) for ts in (10.0, 20.0) for tag in tags])
    assert signal_first(tags, None) == tags
    on_waveform = window.summary(signal_first(tags, "a.w"), now=20)
    assert len(on_waveform) == MAX_TAGS_IN_SNAPSHOT
    assert list(on_waveform)[:2] == ["a.w.rms", "a.w.kurtosis"]  # `a.w` itself has no scalars
    on_scalar = window.summary(signal_first(tags, "a.t19"), now=20)
    assert next(iter(on_scalar)) == "a.t19" and len(on_scalar) == MAX_TAGS_IN_SNAPSHOT
    # As asked, without a signal: the first tags of the profile, the rest left out.
    assert "a.t19" not in window.summary(tags, now=20)
