"""Chattering, run states and topology inhibition: pure tables."""

from gateway.core.records import Sample, Shelving
from gateway.ticketing.noise import ChatterTracker, RunStates
from gateway.ticketing.policy import AssetProfile
from gateway.ticketing.topology import Link, LinkWatcher


def test_three_raises_within_sixty_seconds_is_chattering_and_it_ends_after_a_quiet_minute():
    chatter = ChatterTracker(cycles=3, window_s=60)
    assert not chatter.raised("k", 0)
    assert not chatter.raised("k", 25)
    assert chatter.raised("k", 50)
    assert chatter.is_chattering("k", 55)
    assert not chatter.is_chattering("k", 111)
    assert not chatter.raised("other", 50)


def test_raises_further_apart_than_the_window_never_chatter():
    chatter = ChatterTracker(cycles=3, window_s=60)
    assert not any(chatter.raised("k", t) for t in (0, 31, 62, 93, 124))


def test_run_state_from_a_speed_tag_and_unknown_counts_as_running():
    runs = RunStates(
        {
            "pump-1": AssetProfile("pump-1", run_tag="pump-1.speed", run_above=100),
            "fan-1": AssetProfile("fan-1"),
        }
    )
    assert runs.running("pump-1") and runs.running("fan-1")
    changes = runs.observe([Sample("pump-1.speed", 1, 0.0), Sample("pump-1.speed", 2, 0.0)])
    assert changes == [("pump-1", False)]
    assert not runs.running("pump-1")
    assert runs.observe([Sample.bad("pump-1.speed", 3, "timeout")]) == []
    assert runs.observe([Sample("pump-1.speed", 4, 1480.0)]) == [("pump-1", True)]


def test_timed_and_one_shot_shelving():
    assert Shelving(100.0, "r", "op").active(99.0)
    assert not Shelving(100.0, "r", "op").active(100.0)
    assert Shelving(None, "r", "op").active(1e12)


LINE = Link("rtu-ttyUSB0", "modbus_rtu", frozenset({"a", "b"}), frozenset({"a.x", "b.x", "b.y"}))


def test_a_link_is_lost_only_when_every_tag_behind_it_is_bad():
    links = LinkWatcher([LINE])
    assert links.observe([Sample.bad("a.x", 1, "timeout"), Sample.bad("b.x", 1, "timeout")]) == []
    assert links.inhibiting("a") is None
    (change,) = links.observe([Sample.bad("b.y", 1, "no answer")])
    assert (change.lost, change.link.id, change.reason) == (True, "rtu-ttyUSB0", "no answer")
    assert links.inhibiting("a") == LINE and links.inhibiting("c") is None
    assert links.observe([Sample.bad("a.x", 2, "timeout")]) == []  # reported once
    (restored,) = links.observe([Sample("b.y", 3, 1.0)])
    assert not restored.lost
    assert links.inhibiting("b") is None and links.lost == {}


def test_a_tag_good_again_before_the_last_one_fails_keeps_the_link_up():
    # "Every tag is bad" is about each tag's newest sample: one that answered again in
    # between no longer counts, though no link was lost meanwhile.
    links = LinkWatcher([LINE])
    assert links.observe([Sample.bad("a.x", 1, "timeout"), Sample.bad("b.x", 1, "timeout")]) == []
    assert links.observe([Sample("a.x", 2, 1.0)]) == []
    assert links.observe([Sample.bad("b.y", 3, "no answer")]) == []
    assert links.inhibiting("a") is None and links.lost == {}
    (change,) = links.observe([Sample.bad("a.x", 4, "timeout")])
    assert change.lost


def test_tags_of_other_devices_do_not_touch_the_link():
    links = LinkWatcher([LINE])
    assert links.observe([Sample.bad("z.q", 1, "x")]) == []
    assert links.is_link("rtu-ttyUSB0") and not links.is_link("a")


def test_a_link_listing_its_tags_as_a_tuple_is_lost_when_every_one_is_bad():
    # The assembly lists a link's tags as a tuple (issue 17, memory), a tag of one device
    # read twice listed twice: the link is still lost only once every distinct tag is BAD.
    line = Link("modbus-tcp-10.0.0.5-502", "modbus_tcp", frozenset({"a"}), ("a.x", "a.y", "a.x"))
    links = LinkWatcher([line])
    assert links.observe([Sample.bad("a.x", 1, "timeout"), Sample.bad("a.x", 2, "timeout")]) == []
    (change,) = links.observe([Sample.bad("a.y", 2, "timeout")])
    assert change.lost and links.inhibiting("a") == line
    (restored,) = links.observe([Sample("a.x", 3, 1.0)])
    assert not restored.lost and links.lost == {}
