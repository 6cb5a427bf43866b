"""The node's recent alerts: a repeat of the same alert within the window is folded into its
row (not logged, not listed again); after the window it is logged again, with the count."""

from __future__ import annotations

from hypothesis import given, strategies as st

from gossip import Alert, AlertKind
from node._alerts import RecentAlerts

REVOKED = Alert(AlertKind.PROTOCOL_ERROR, 7, "device 7 (till-3) is revoked")
WINDOW = 600_000


def test_a_device_that_keeps_failing_the_same_way_is_one_row_and_one_line_per_window():
    recent = RecentAlerts(50, WINDOW)
    lines = [recent.add(REVOKED, t) for t in range(0, 3 * WINDOW, 30_000)]  # every 30 s for 30 min
    logged = [line for line in lines if line is not None]
    assert len(logged) == 3  # once per window
    assert logged[0] == "alert protocol_error (device 7): device 7 (till-3) is revoked"
    assert logged[1].endswith("(the last one repeated 19 times)")
    assert [(row["at_ms"], row["repeats"], row["last_ms"]) for row in recent] == [
        (0, 19, 570_000), (600_000, 19, 1_170_000), (1_200_000, 19, 1_770_000)]


def test_other_alerts_keep_their_rows_beside_a_repeating_one():
    recent = RecentAlerts(3, WINDOW)
    skew = Alert(AlertKind.CLOCK_SKEW, 4, "device 4 is 90 s ahead")
    assert recent.add(skew, 0) is not None
    for t in range(1, 200):
        recent.add(REVOKED, t)
    assert [row["kind"] for row in recent] == ["clock_skew", "protocol_error"]
    assert recent.add(Alert(AlertKind.PROTOCOL_ERROR, 8, "device 8 (till-4) is revoked"), 300) is not None
    assert recent.add(skew, 400) is None  # still inside its window
    assert len(recent) == 3


_alerts = st.builds(Alert, st.sampled_from([AlertKind.PROTOCOL_ERROR, AlertKind.FORK]), st.integers(1, 3),
                    st.sampled_from(["a", "b"]))


@given(events=st.lists(st.tuples(_alerts, st.integers(0, 2 * WINDOW)), max_size=60), size=st.integers(1, 8))
def test_every_alert_is_logged_or_counted_as_a_repeat_of_a_row_opened_less_than_a_window_before(events, size):
    events = sorted(events, key=lambda e: e[1])
    recent = RecentAlerts(size, WINDOW)
    logged = 0
    for alert, at in events:
        key = (alert.kind.value, alert.origin, alert.detail)
        listed = {(r["kind"], r["device"], r["detail"]): r["at_ms"] for r in recent}
        repeat = key in listed and at - listed[key] < WINDOW
        line = recent.add(alert, at)
        assert (line is None) == repeat
        logged += line is not None
    rows = list(recent)
    assert len(rows) <= size
    assert logged + sum(r["repeats"] for r in rows) >= len(rows)
    assert len({(r["kind"], r["device"], r["detail"], r["at_ms"]) for r in rows}) == len(rows)
    if logged <= size:  # no row fell off: every alert is a row or a repeat of one
        assert logged == len(rows) and logged + sum(r["repeats"] for r in rows) == len(events)


def test_a_clock_set_back_does_not_silence_an_alert():
    recent = RecentAlerts(50, WINDOW)
    assert recent.add(REVOKED, 10 * WINDOW) is not None
    assert recent.add(REVOKED, 10 * WINDOW + 1) is None
    assert recent.add(REVOKED, 5 * WINDOW) is not None  # the wall clock stepped back an hour
