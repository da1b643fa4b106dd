"""perfmodel.heap: glibc's malloc thresholds raised once, never where opted out or off glibc."""
import ctypes
import platform

import pytest

from perfmodel import heap


@pytest.fixture
def fresh(monkeypatch):
    """keep_heap as before its first call, with mallopt recorded instead of called."""
    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(heap, "_done", False)
    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeLibc())
    monkeypatch.setattr(platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.delenv("PERFMODEL_KEEP_HEAP", raising=False)
    return calls


def test_thresholds_are_raised_once(fresh):
    assert heap.keep_heap() and heap.keep_heap()
    assert fresh == [(-3, heap.MMAP_THRESHOLD), (-1, heap.TRIM_THRESHOLD)]
    # the blocks a sweep churns (a chunk's 1 MB temporaries, 8 MB columns) come from the heap
    assert heap.MMAP_THRESHOLD >= 8 << 20 and heap.TRIM_THRESHOLD >= heap.MMAP_THRESHOLD


def test_opt_out_and_other_c_libraries_leave_malloc_alone(fresh, monkeypatch):
    monkeypatch.setenv("PERFMODEL_KEEP_HEAP", "0")
    assert not heap.keep_heap()
    monkeypatch.delenv("PERFMODEL_KEEP_HEAP")
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    assert not heap.keep_heap()
    assert fresh == []


@pytest.mark.parametrize("value", ["yes", "", "2"])
def test_a_setting_other_than_0_or_1_is_a_one_line_error(fresh, monkeypatch, value):
    monkeypatch.setenv("PERFMODEL_KEEP_HEAP", value)
    with pytest.raises(ValueError, match=r"^PERFMODEL_KEEP_HEAP: .* must be 0 .* or 1"):
        heap.keep_heap()
    assert fresh == []
