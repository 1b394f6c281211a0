"""ISA-18.2 flood bookkeeping: start above 10 per 10 min, members, root cause, end below 5."""

from gateway.ticketing.storms import Arrival, FloodTracker

T0 = 1_000_000.0


def tracker() -> FloodTracker:
    return FloodTracker(threshold=10, window_s=600, end_below=5, p0_per_hour=50)


def arrive(flood: FloodTracker, ts: float, n: int, area: str = "hall"):
    return flood.arrive(area, Arrival(ts, f"site/asset-{n}/threshold.high/d", f"asset-{n}", "x"))


def test_the_eleventh_new_condition_in_ten_minutes_starts_a_flood_with_the_earlier_ones():
    floods = tracker()
    for n in range(10):
        assert arrive(floods, T0 + n * 50, n) == (None, False)
    flood, started = arrive(floods, T0 + 540, 10)
    assert started and flood is not None
    assert len(flood.members) == 11
    assert flood.suspected_root_cause().asset == "asset-0"
    assert arrive(floods, T0 + 550, 11)[1] is False  # later ones join the same flood
    assert floods.floods_started == 1


def test_ten_in_ten_minutes_is_not_a_flood_and_areas_count_apart():
    floods = tracker()
    for n in range(10):
        arrive(floods, T0 + n, n, area="hall")
        arrive(floods, T0 + n, n, area="yard")
    assert floods.floods() == []
    assert floods.per_area_in_window(T0 + 10) == {"hall": 10, "yard": 10}


def test_arrivals_spread_over_more_than_the_window_never_flood():
    floods = tracker()
    for n in range(40):
        assert arrive(floods, T0 + n * 61, n)[0] is None


def test_flood_ends_when_fewer_than_five_arrive_in_ten_minutes():
    floods = tracker()
    for n in range(12):
        arrive(floods, T0 + n, n)
    assert floods.end_floods(T0 + 300) == []  # not before a whole window
    for n in range(5):
        arrive(floods, T0 + 700 + n, 100 + n)
    assert floods.end_floods(T0 + 900) == []  # 5 in the last ten minutes: still a flood
    ended = floods.end_floods(T0 + 1400)  # none in the last ten minutes
    assert [f.area for f in ended] == ["hall"]
    assert floods.flood("hall") is None
    assert floods.time_in_flood_s(T0 + 2000) == 1400 - 10


def test_summary_names_top_members_by_arrivals_and_the_earliest_as_root_cause():
    floods = tracker()
    for n in range(11):
        arrive(floods, T0 + n, n)
    flood = floods.flood("hall")
    assert flood is not None
    for _ in range(5):
        arrive(floods, T0 + 20, 7)
    summary = flood.summary(top=3)
    assert summary["member_count"] == 11
    assert summary["top_members"][0] == {
        "key": "site/asset-7/threshold.high/d",
        "asset": "asset-7",
        "fault_code": "x",
        "arrivals": 6,
    }
    assert summary["suspected_root_cause"]["asset"] == "asset-0"
    assert floods.per_hour("hall", T0 + 30) == 16


def test_top_ten_share_of_the_last_hour():
    floods = tracker()
    assert floods.top_share(T0) is None
    for n in range(20):
        arrive(floods, T0 + n * 100, n % 12)  # 12 distinct keys, 20 arrivals
    share = floods.top_share(T0 + 2000)
    assert share == 18 / 20


# --- the service: a second flood while the first one's incident is still open -----------------


async def test_a_new_flood_while_the_incident_is_still_open_continues_it(tmp_path):
    """One key has one open ticket: the central system has not closed the incident of the
    first flood, so the second flood of the area updates it instead of opening another
    (which state.db would refuse)."""
    from gateway.core.clock import ManualClock
    from gateway.core.records import FaultCode, Finding, Priority
    from gateway.ticketing.policy import AssetProfile
    from tests.ticketing.restart import Gateway

    # One make of machine each: many signatures, the ISA flood (one signature would be a
    # storm of its group, issue 13).
    assets = {f"m-{n}": AssetProfile(f"m-{n}", f"make-{n}", area="hall") for n in range(30)}
    gw = Gateway(tmp_path / "state.db", ManualClock(T0), assets)
    await gw.boot()
    try:

        async def burst(first: int) -> None:
            for n in range(first, first + 12):
                gw.clock.advance(5)
                await gw.service.on_finding(
                    Finding(
                        asset=f"m-{n}",
                        fault_code=FaultCode.THRESHOLD_HIGH,
                        severity=Priority.P2,
                        score=1.0,
                        detector="threshold:oil",
                        message="hot",
                        ts=gw.clock.now(),
                    )
                )

        await burst(0)
        incident = gw.service.ticket_for("plant-a/hall/alarm.flood/isa18.2-flood")
        assert incident is not None
        gw.clock.advance(1200)
        await gw.service.advance_timers()
        assert gw.service.kpis()["floods_active"] == []

        await burst(12)  # a second flood; the incident was never closed
        assert gw.service.kpis()["floods_active"] == ["hall"]
        again = gw.service.ticket_for("plant-a/hall/alarm.flood/isa18.2-flood")
        assert again is not None and again.id == incident.id
        last = (await gw.db.tickets.ticket_events(incident.id))[-1]
        assert (last.kind, last.detail["reason"]) == ("updated", "flood_again")
        assert gw.service.statistics().incidents == 1
    finally:
        await gw.shutdown()


# --- storms by signature (issue 13): the group count and the topology ----------------------

DAY = 86_400.0


def group_tracker():
    from gateway.ticketing.groups import GroupTracker

    return GroupTracker(threshold=10, window_s=DAY, wait_s=30.0, p0_per_hour=50)


def test_the_group_key_is_made_of_the_configured_labels():
    from gateway.ticketing.groups import group_asset, group_key, group_labels
    from gateway.ticketing.policy import AssetProfile

    profile = AssetProfile(
        "n-1", "air_nozzle", area="paint", line="l2", feed="air-main", plc="rtu-1"
    )
    default = group_labels(
        ("site", "fault_code", "asset_class"), "plant-a", profile, "threshold.low"
    )
    assert group_key(default) == "site=plant-a,fault_code=threshold.low,asset_class=air_nozzle"
    assert group_asset(default) == "storm-threshold.low-air_nozzle"
    by_feed = group_labels(("site", "feed", "plc"), "plant-a", profile, "threshold.low")
    assert by_feed == {"site": "plant-a", "feed": "air-main", "plc": "rtu-1"}


def test_more_than_ten_new_conditions_in_24_hours_cross_the_threshold_at_any_pace():
    groups = group_tracker()
    slow = groups.group("g", {})
    for n in range(11):  # one every 2 h: 11 within 20 h
        groups.arrive(slow, Arrival(T0 + n * 7200, f"k{n}", f"a{n}", "x"))
    assert groups.over_threshold(slow)
    slower = groups.group("h", {})
    for n in range(11):  # one every 2.5 h: never 11 within 24 h
        groups.arrive(slower, Arrival(T0 + n * 9000, f"k{n}", f"a{n}", "x"))
    assert not groups.over_threshold(slower)


def test_more_than_fifty_within_an_hour_is_p0_and_the_hour_slides():
    groups = group_tracker()
    storm = groups.group("g", {})
    for n in range(51):
        groups.arrive(storm, Arrival(T0 + n * 70, f"k{n}", f"a{n}", "x"))  # 51 in 58 min
    assert groups.p0(storm, T0 + 50 * 70)
    assert not groups.p0(storm, T0 + 3600 + 1)  # the first has left the hour


def test_a_second_new_condition_within_group_wait_starts_a_hold_until_wait_after_the_first():
    groups = group_tracker()
    storm = groups.group("g", {})
    groups.arrive(storm, Arrival(T0, "k0", "a0", "x"))
    assert not groups.starts_hold(storm, T0)  # the first of a quiet group: no hold
    groups.arrive(storm, Arrival(T0 + 40, "k1", "a1", "x"))
    assert not groups.starts_hold(storm, T0 + 40)  # 40 s later: not a burst
    groups.arrive(storm, Arrival(T0 + 50, "k2", "a2", "x"))
    assert groups.starts_hold(storm, T0 + 50)
    assert storm.hold_until == T0 + 40 + 30


def test_dependencies_are_followed_through_and_a_cycle_is_cut():
    from gateway.ticketing.topology import Dependencies, Link

    bus = Link("can-can0", "can", frozenset({"press-1"}), frozenset({"press-1.t"}))
    deps = Dependencies(
        {"press-1": ["hydraulic-1"], "hydraulic-1": ["feeder-3"], "feeder-3": ["press-1"]},
        [bus],
    )
    assert deps.upstream("press-1") == {"hydraulic-1", "feeder-3", "can-can0"}
    assert deps.upstream("feeder-3") == {"press-1", "hydraulic-1", "can-can0"}
    assert deps.is_link("can-can0") and not deps.is_link("feeder-3")
    assert deps.upstream("nozzle-9") == frozenset()
