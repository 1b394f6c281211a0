import itertools
import json
import math
import re

import numpy as np
import pytest

from gateway.core.records import OutboxKind
from tests.uplink.helpers import GATEWAY, SITE, TOPICS, make_event, make_ticket
from uplink.events import (
    CLOUDEVENTS_CONTENT_TYPE,
    make_ticket_encoder,
    rfc3339,
    source_urn,
    user_properties,
)
from uplink.topics import Topics


def encoder(start: int = 1):
    counter = itertools.count(start)
    return make_ticket_encoder(TOPICS, source_urn(SITE, GATEWAY), lambda: next(counter))


def test_opened_ticket_becomes_a_structured_cloudevent_on_tickets_opened():
    message = encoder(41)(make_ticket(), make_event("opened"))
    doc = json.loads(message.payload)

    assert message.topic == "factory/plant-a/gw-1/tickets/opened"
    assert message.kind is OutboxKind.TICKET
    assert message.ticket_id == "T-1"
    assert doc["specversion"] == "1.0"
    assert doc["id"] == message.event_id and re.fullmatch(r"[0-9a-f]{32}", doc["id"])
    assert doc["source"] == "urn:edge:plant-a:gw-1"
    assert doc["type"] == "com.edge-gateway.ticket.opened"
    assert doc["time"] == "2023-11-14T22:13:20.000Z"
    assert doc["subject"] == "T-1"
    assert doc["datacontenttype"] == "application/json"
    assert doc["sequence"] == "00000000000000000041"


def test_data_is_the_ticket_summary_with_its_iso14224_failure_mode():
    data = json.loads(encoder()(make_ticket(), make_event()).payload)["data"]
    assert data == {
        "id": "T-1",
        "key": "plant-a/pump-1/threshold.high/bearing_temp_hi",
        "site": "plant-a",
        "gateway": "gw-1",
        "asset": "pump-1",
        "fault_code": "threshold.high",
        "iso14224_failure_mode": "HIO",
        "detector": "bearing_temp_hi",
        "priority": "P2",
        "state": "OPENED",
        "revision": 1,
        "opened_at": "2023-11-14T22:13:20.000Z",
        "first_seen": "2023-11-14T22:13:15.000Z",
        "last_seen": "2023-11-14T22:13:20.000Z",
        "occurrences": 1,
        "peak_value": 92.5,
        "message": "Bearing temperature 92.5 °C is above the hi limit of 85 °C.",
        "condition_active": True,
        "central_id": None,
        "acknowledged_at": None,
        "evidence": {"limit": 85.0, "value": 92.5, "unit": "°C"},
        "respond_by": None,
        "resolve_by": None,
        "closed_at": None,
        "change": {},
    }


@pytest.mark.parametrize(
    ("kind", "topic_tail"),
    [
        ("opened", "tickets/opened"),
        ("updated", "tickets/updated"),
        ("condition_cleared", "tickets/updated"),
        ("acknowledged", "tickets/transition"),
        ("assigned", "tickets/transition"),
        ("closed", "tickets/transition"),
        ("reopened", "tickets/transition"),
        ("renotified", "tickets/updated"),
        ("resync", "tickets/updated"),
    ],
)
def test_each_event_kind_has_its_type_and_topic(kind, topic_tail):
    message = encoder()(make_ticket(), make_event(kind))
    assert message.topic == f"factory/plant-a/gw-1/{topic_tail}"
    assert json.loads(message.payload)["type"] == f"com.edge-gateway.ticket.{kind}"


def test_every_message_gets_a_new_id_and_the_next_sequence():
    encode = encoder()
    first = encode(make_ticket(), make_event("opened"))
    second = encode(make_ticket(revision=2, occurrences=2), make_event("updated", revision=2))
    docs = [json.loads(m.payload) for m in (first, second)]
    assert first.event_id != second.event_id
    assert [d["sequence"] for d in docs] == ["00000000000000000001", "00000000000000000002"]
    assert docs[0]["sequence"] < docs[1]["sequence"]  # text order is number order
    assert docs[1]["data"]["revision"] == 2 and docs[1]["data"]["occurrences"] == 2


def test_numpy_numbers_are_plain_json_and_non_finite_values_become_null():
    ticket = make_ticket(
        peak_value=math.inf,
        evidence={"rms": np.float64(4.5), "count": np.int64(3), "bad": math.nan, "zone": "C"},
    )
    data = json.loads(encoder()(ticket, make_event()).payload)["data"]
    assert data["peak_value"] is None
    assert data["evidence"] == {"rms": 4.5, "count": 3, "bad": None, "zone": "C"}


def test_an_array_in_evidence_is_refused_not_sent():
    ticket = make_ticket(evidence={"waveform": np.zeros(4)})
    with pytest.raises(TypeError, match="ndarray"):
        encoder()(ticket, make_event())


def test_an_event_kind_that_is_not_an_identifier_is_a_bug():
    with pytest.raises(ValueError, match="kind"):
        encoder()(make_ticket(), make_event("Opened!"))


def test_user_properties_are_the_cloudevent_attributes_under_their_own_names():
    """CloudEvents MQTT binding 3.1.3.1: attribute names unchanged (`id`, not `ce_id`)."""
    message = encoder(7)(make_ticket(revision=3), make_event("updated", revision=3))
    document = json.loads(message.payload)
    assert user_properties(message.payload) == [
        ("specversion", "1.0"),
        ("id", message.event_id),
        ("source", source_urn(SITE, GATEWAY)),
        ("type", "com.edge-gateway.ticket.updated"),
        ("time", document["time"]),
        ("subject", "T-1"),
        ("sequence", "00000000000000000007"),
        ("revision", "3"),
    ]
    assert list(message.user_properties) == user_properties(message.payload)
    assert CLOUDEVENTS_CONTENT_TYPE == "application/cloudevents+json"


@pytest.mark.parametrize("payload", [b"", b"not json", b"[1,2]", b'{"state":"online"}', b"\xff"])
def test_user_properties_of_anything_else_are_empty(payload):
    assert user_properties(payload) == []


def test_rfc3339_is_utc_with_milliseconds():
    assert rfc3339(0.25) == "1970-01-01T00:00:00.250Z"


def test_topics_of_a_gateway():
    topics = Topics("acme/factory", "plant-a", "gw-1")
    assert topics.tickets_opened == "acme/factory/plant-a/gw-1/tickets/opened"
    assert topics.tickets_updated == "acme/factory/plant-a/gw-1/tickets/updated"
    assert topics.tickets_filter == "acme/factory/plant-a/gw-1/tickets/#"
    assert topics.status == "acme/factory/plant-a/gw-1/status"
    assert topics.health == "acme/factory/plant-a/gw-1/health"
    assert topics.summary("pump-1") == "acme/factory/plant-a/gw-1/summaries/pump-1"
    assert topics.cmd("ack") == "acme/factory/plant-a/gw-1/cmd/ack"
    assert topics.cmd_filter == "acme/factory/plant-a/gw-1/cmd/+"
    assert topics.verb_of("acme/factory/plant-a/gw-1/cmd/ack") == "ack"
    assert topics.verb_of("acme/factory/plant-a/gw-2/cmd/ack") is None
    assert topics.verb_of("acme/factory/plant-a/gw-1/cmd/") is None


@pytest.mark.parametrize(
    ("prefix", "site", "gateway"),
    [
        ("", "s", "g"),
        ("/f", "s", "g"),
        ("f/", "s", "g"),
        ("f/#", "s", "g"),
        ("f", "s/x", "g"),
        ("f", "s", "+"),
        ("f", "", "g"),
    ],
)
def test_topics_refuse_levels_that_would_break_the_tree(prefix, site, gateway):
    with pytest.raises(ValueError):
        Topics(prefix, site, gateway)


def test_settings_from_the_gateway_config_model():
    from gateway.config.models import UplinkConfig
    from uplink.service import UplinkSettings

    config = UplinkConfig.model_validate(
        {"host": "10.0.0.5", "port": 8883, "topic_prefix": "acme", "keepalive_s": 20,
         "resend_interval_s": 12.5, "username": "edge"}
    )  # fmt: skip
    settings = UplinkSettings.from_config(config, "plant-a", "gw-1", password="s3cret")
    assert settings.topics == Topics("acme", "plant-a", "gw-1")
    assert (settings.host, settings.port) == ("10.0.0.5", 8883)
    assert settings.client_id == "edge-plant-a-gw-1"
    assert (settings.keepalive_s, settings.resend_interval_s) == (20, 12.5)
    assert settings.username == "edge" and settings.password == "s3cret"
    assert "s3cret" not in repr(settings)  # secrets are never logged


def test_incident_events_go_to_the_incident_topics():
    incident = make_ticket(fault_code="alarm.flood", asset="utilities")
    encode = encoder()
    topics = [
        encode(incident, make_event(kind)).topic.rsplit("/", 2)[-2:]
        for kind in ("opened", "updated", "acknowledged")
    ]
    assert topics == [
        ["incidents", "opened"],
        ["incidents", "updated"],
        ["incidents", "transition"],
    ]


def test_lifecycle_attributes_are_in_the_payload_but_the_baseline_stays_on_site():
    ticket = make_ticket(
        respond_by=1_700_000_900.0,
        attributes={
            "routing": {"site": "plant-a", "area": "utilities", "skill": "mechanical"},
            "failure_coding": {"iso14224_failure_mode": "HIO", "cmms": {"damage": "OVH"}},
            "knowledge": [{"actions": ["Check lubrication."]}],
            "recurrence_of": "T-0",
            "baseline": {"pump-1.bearing_temp": 61.0},
        },
    )
    data = json.loads(encoder()(ticket, make_event()).payload)["data"]
    assert data["respond_by"] == "2023-11-14T22:28:20.000Z"
    assert data["routing"]["skill"] == "mechanical"
    assert data["failure_coding"]["cmms"] == {"damage": "OVH"}
    assert data["knowledge"][0]["actions"] == ["Check lubrication."]
    assert data["recurrence_of"] == "T-0"
    assert "baseline" not in data
