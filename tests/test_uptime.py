"""Uptime on the slot grid: whole slots in the window, from the node's first report, while we observed."""

from __future__ import annotations

from datetime import timedelta

from fleetscope.uptime import Uptime, slot_range, uptime
from tests.fleetdata import T0, Fleet, at


def test_uptime_counts_slots_with_a_successful_observation(conn):
    fleet = Fleet(conn)
    node = fleet.node(interval_s=15)
    fleet.observing(at(-3600), at(3600))
    # A 10-minute window is 40 slots of 15 s. Successful observations in
    # slots 0, 1 (twice: counts once), 5 and 39; a failed one in slot 2; one
    # in the slot after the window, which does not count.
    for seconds in (1, 16, 29, 75, 599):
        fleet.observe(node, at(seconds))
    fleet.observe(node, at(31), ok=False)
    fleet.observe(node, at(600))
    result = uptime(conn, node, start=at(0), end=at(600))
    assert result == Uptime(window_slots=40, observed_slots=40, ok_slots=4)
    assert result.ratio == 0.1


def test_a_node_is_judged_from_the_slot_of_its_first_report_not_from_its_registration(conn):
    fleet = Fleet(conn)
    # Registered at 11:00, an hour before the window; its exporter first
    # reported at 12:02:07, inside slot [12:02:00, 12:02:15): that slot and
    # the 31 after it, up to 12:10:00, are counted: 32 slots, all up. The
    # failed scrapes before the first report are setup, not downtime.
    node = fleet.node(interval_s=15, registered_at=at(-3600))
    fleet.observing(at(-3600), at(3600))
    for seconds in range(-3600, 127, 15):
        fleet.observe(node, at(seconds), ok=False)
    for seconds in range(127, 600, 15):  # one observation in each of those 32 slots
        fleet.observe(node, at(seconds))
    result = uptime(conn, node, start=at(0), end=at(600))
    assert result == Uptime(window_slots=32, observed_slots=32, ok_slots=32)
    assert result.ratio == 1.0
    assert slot_range(start=at(0), end=at(600), interval_s=15, first_report_at=at(127)) == (
        int(at(120).timestamp()) // 15, int(at(585).timestamp()) // 15)


def test_once_a_node_has_reported_every_later_slot_counts_down_or_not(conn):
    fleet = Fleet(conn)
    node = fleet.node(interval_s=15, registered_at=at(-86400))
    fleet.observing(at(-86400), at(3600))
    fleet.observe(node, at(-30))  # one report, then silence for the whole window
    result = uptime(conn, node, start=at(0), end=at(600))
    assert result == Uptime(window_slots=40, observed_slots=40, ok_slots=0) and result.ratio == 0.0


def test_a_node_that_never_reported_has_no_uptime_to_judge(conn):
    fleet = Fleet(conn)
    node = fleet.node(interval_s=15, registered_at=at(-86400))
    fleet.observing(at(-86400), at(3600))
    fleet.observe(node, at(10), ok=False)
    result = uptime(conn, node, start=at(0), end=at(600))
    assert result == Uptime(window_slots=0, observed_slots=0, ok_slots=0) and result.ratio is None
    # A first report after the window's end does not reach back into it.
    fleet.observe(node, at(900))
    assert uptime(conn, node, start=at(0), end=at(600)).window_slots == 0
    assert slot_range(start=at(0), end=at(600), interval_s=15, first_report_at=None) == (
        int(at(600).timestamp()) // 15, int(at(585).timestamp()) // 15)


def test_slots_when_fleetscope_was_not_observing_are_left_out(conn):
    fleet = Fleet(conn)
    node = fleet.node(interval_s=15)
    # We observed 12:00:00-12:03:00 and 12:04:00-12:10:00: the four slots of
    # 12:03:00-12:04:00 had no heartbeat (12:03:00 itself was the last beat, so
    # slot [12:03:00, 12:03:15) was observed). 40 - 3 = 37 observed slots.
    fleet.observing(at(0), at(180))
    fleet.observing(at(240), at(600), collector_id="c2")
    for seconds in range(0, 180, 15):  # 12 ok slots before our outage
        fleet.observe(node, at(seconds + 1))
    result = uptime(conn, node, start=at(0), end=at(600))
    assert result == Uptime(window_slots=40, observed_slots=37, ok_slots=12)
    assert result.excluded_slots == 3


def test_a_window_edge_inside_a_slot_counts_only_whole_slots(conn):
    fleet = Fleet(conn)
    node = fleet.node(interval_s=60)
    fleet.observing(at(-3600), at(3600))
    fleet.observe(node, at(10))     # slot [12:00, 12:01): starts before the window, not counted
    fleet.observe(node, at(70))     # slot [12:01, 12:02): counted
    fleet.observe(node, at(250))    # slot [12:04, 12:05): ends after the window, not counted
    result = uptime(conn, node, start=at(30), end=at(270))
    assert result == Uptime(window_slots=3, observed_slots=3, ok_slots=1)


def test_uptime_without_any_observing_period_is_undefined(conn):
    fleet = Fleet(conn)
    node = fleet.node()
    fleet.observe(node, T0)
    result = uptime(conn, node, start=T0 - timedelta(hours=1), end=T0 + timedelta(hours=1))
    assert result.observed_slots == 0 and result.ratio is None


def test_uptime_of_an_unknown_node_is_none(conn):
    assert uptime(conn, 424242, start=T0, end=T0 + timedelta(hours=1)) is None
