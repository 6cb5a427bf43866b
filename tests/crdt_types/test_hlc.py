"""HLC: strictly increasing stamps whatever physical time does; remote stamps adopted only
within the allowed skew; restorable; packed losslessly into one 64-bit integer."""

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt_types import DEFAULT_MAX_SKEW_MS, HLC, ClockSkew, InvalidInput, MalformedWire, Timestamp

MAX_MS = 2**48 - 1
MAX_LOGICAL = 2**16 - 1

stamps = st.builds(Timestamp, st.integers(0, MAX_MS), st.integers(0, MAX_LOGICAL))
# Physical times that jump around, step back, and repeat, near zero or near the end of time.
physical_times = st.one_of(st.integers(0, 50), st.integers(0, MAX_MS - 10), st.integers(MAX_MS - 10, MAX_MS - 1))
skews = st.integers(0, 10**7)


@given(times=st.lists(physical_times, min_size=1, max_size=60), skew=skews)
def test_stamps_strictly_increase_even_when_time_goes_backwards(times, skew):
    clock = HLC(max_skew_ms=skew)
    previous = clock.last
    for physical in times:
        stamp = clock.now(physical)
        assert stamp > previous
        assert stamp.pack() > previous.pack()
        assert stamp.ms >= physical  # never behind physical time
        assert clock.last == stamp
        previous = stamp


@given(
    events=st.lists(st.one_of(
        st.tuples(st.just("now"), physical_times),
        # (a remote stamp at the very end of time would exhaust the clock, which is tested apart)
        st.tuples(st.just("observe"), st.builds(Timestamp, st.integers(0, MAX_MS - 100), st.integers(0, MAX_LOGICAL)),
                  physical_times),
    ), max_size=60),
    skew=skews,
)
def test_interleaved_observations_never_move_the_clock_back(events, skew):
    clock = HLC(max_skew_ms=skew)
    previous = clock.last
    for event in events:
        if event[0] == "now":
            stamp = clock.now(event[1])
            assert stamp > previous
        else:
            clock.observe(event[1], event[2])
            assert clock.last >= previous
        previous = clock.last


@given(base=st.integers(0, 10**9), skew=skews, ahead=st.integers(1, 10**9), logical=st.integers(0, MAX_LOGICAL),
       history=st.lists(st.integers(0, 10**9), max_size=5))
def test_a_stamp_beyond_the_skew_is_reported_and_not_adopted(base, skew, ahead, logical, history):
    clock, twin = HLC(max_skew_ms=skew), HLC(max_skew_ms=skew)
    for physical in history:
        clock.now(physical)
        twin.now(physical)
    last = clock.last
    remote = Timestamp(base + skew + ahead, logical)
    report = clock.observe(remote, base)
    assert report == ClockSkew(remote, base, skew + ahead)
    assert report.skew_ms > skew
    assert clock.last == last
    # Later local stamps follow local time exactly as if the remote stamp had never come.
    assert clock.now(base) == twin.now(base)


@given(physical=st.integers(0, 10**9), skew=skews, behind=st.integers(0, 10**9), logical=st.integers(0, MAX_LOGICAL),
       later=st.integers(0, 2 * 10**9), history=st.lists(st.integers(0, 10**9), max_size=5))
def test_a_stamp_within_the_skew_is_adopted_and_the_next_stamp_is_above_it(
        physical, skew, behind, logical, later, history):
    clock = HLC(max_skew_ms=skew)
    for t in history:
        clock.now(t)
    before = clock.last
    remote = Timestamp(max(0, physical + skew - behind), logical)
    assert clock.observe(remote, physical) is None
    assert clock.last == max(before, remote)
    nxt = clock.now(later)  # any physical time, even long before
    assert nxt > remote and nxt > before


def test_the_skew_boundary_is_inclusive():
    clock = HLC(max_skew_ms=1000)
    assert clock.observe(Timestamp(6000), 5000) is None
    assert clock.last == Timestamp(6000)
    assert isinstance(clock.observe(Timestamp(7001), 6000), ClockSkew)
    assert clock.last == Timestamp(6000)


def test_default_skew_is_five_minutes():
    clock = HLC()
    assert clock.max_skew_ms == DEFAULT_MAX_SKEW_MS == 300_000
    assert isinstance(clock.observe(Timestamp(300_001), 0), ClockSkew)
    assert clock.last == Timestamp(0, 0)
    assert clock.observe(Timestamp(300_000), 0) is None
    assert clock.last == Timestamp(300_000)


@given(stamp=stamps.filter(lambda s: s != Timestamp(MAX_MS, MAX_LOGICAL)), times=st.lists(physical_times, min_size=1, max_size=5))
def test_a_restored_clock_continues_above_its_last_stamp(stamp, times):
    clock = HLC(last=stamp)
    assert clock.last == stamp
    previous = stamp
    for physical in times:
        nxt = clock.now(physical)
        assert nxt > previous
        previous = nxt


def test_logical_overflow_borrows_the_next_millisecond():
    clock = HLC(last=Timestamp(5, MAX_LOGICAL))
    assert clock.now(0) == Timestamp(6, 0)


def test_an_exhausted_clock_refuses_and_stays_put():
    clock = HLC(last=Timestamp(MAX_MS, MAX_LOGICAL))
    with pytest.raises(InvalidInput):
        clock.now(MAX_MS)
    assert clock.last == Timestamp(MAX_MS, MAX_LOGICAL)


@given(stamp=stamps)
def test_pack_unpack_roundtrip(stamp):
    packed = stamp.pack()
    assert 0 <= packed < 2**64
    assert Timestamp.unpack(packed) == stamp
    assert Timestamp.unpack(cbor2.loads(cbor2.dumps(packed))) == stamp


@given(a=stamps, b=stamps)
def test_packing_preserves_order(a, b):
    assert (a < b) == (a.pack() < b.pack())
    assert (a == b) == (a.pack() == b.pack())


@pytest.mark.parametrize("ms, logical", [(-1, 0), (MAX_MS + 1, 0), (0, -1), (0, MAX_LOGICAL + 1),
                                         (1.0, 0), (0, 1.0), (True, 0), (0, False), ("1", 0), (None, 0)])
def test_bad_stamps_are_refused(ms, logical):
    with pytest.raises(InvalidInput):
        Timestamp(ms, logical)


@pytest.mark.parametrize("packed", [-1, 2**64, 1.0, float(2**20), True, "5", None, [5], b"\x05"])
def test_bad_packed_stamps_are_malformed_wire(packed):
    with pytest.raises(MalformedWire):
        Timestamp.unpack(packed)


@pytest.mark.parametrize("physical", [-1, MAX_MS + 1, 5.0, True, None, "5"])
def test_bad_physical_time_is_refused_and_changes_nothing(physical):
    clock = HLC(last=Timestamp(10, 3))
    with pytest.raises(InvalidInput):
        clock.now(physical)
    with pytest.raises(InvalidInput):
        clock.observe(Timestamp(11), physical)
    assert clock.last == Timestamp(10, 3)


@pytest.mark.parametrize("kwargs", [{"max_skew_ms": -1}, {"max_skew_ms": 1.5}, {"max_skew_ms": True},
                                    {"last": 5}, {"last": (5, 0)}])
def test_bad_clock_arguments_are_refused(kwargs):
    with pytest.raises(InvalidInput):
        HLC(**kwargs)


@pytest.mark.parametrize("remote", [5, 5 << 16, (5, 0), None])
def test_observe_wants_a_timestamp(remote):
    clock = HLC()
    with pytest.raises(InvalidInput):
        clock.observe(remote, 0)
    assert clock.last == Timestamp(0, 0)
