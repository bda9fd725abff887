"""The thread backend's batches: work waiting together runs together, in every process, and a
failure or the switch stops nothing but itself."""

import os
import threading
import time

import pytest
from django.test import override_settings

from django_zinrelo import dispatch

pytestmark = pytest.mark.django_db(transaction=True)


def thread_backend(**extra):
    from django.conf import settings

    return override_settings(ZINRELO={**settings.ZINRELO, "DELIVERY": "thread", **extra})


class Batches:
    """A batch form that records each batch it is given; the first one waits to be released."""

    def __init__(self, fail_first=False):
        self.seen = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.done = threading.Event()
        self.fail_first = fail_first

    def __call__(self, items):
        self.seen.append(list(items))
        if len(self.seen) == 1:
            self.started.set()
            assert self.release.wait(5)
            if self.fail_first:
                raise RuntimeError("our own bug")
        if sum(len(batch) for batch in self.seen) >= 4:
            self.done.set()


def one(*args):
    raise AssertionError("the thread backend runs the batch form")


def put_while_the_first_batch_runs(batches):
    """Work "a" alone, then "b", "c" and "d" put while its batch is running."""
    with thread_backend():
        dispatch.submit(one, "a", batch=batches)
        assert batches.started.wait(5)
        for name in ("b", "c", "d"):
            dispatch.submit(one, name, batch=batches)
        batches.release.set()
        assert batches.done.wait(5)


def test_work_put_while_a_batch_runs_is_done_as_one_batch():
    batches = Batches()
    put_while_the_first_batch_runs(batches)
    assert batches.seen == [[("a",)], [("b",), ("c",), ("d",)]]


def test_a_batch_that_raises_is_logged_and_the_next_ones_still_run(caplog):
    batches = Batches(fail_first=True)
    put_while_the_first_batch_runs(batches)
    assert "Zinrelo delivery failed" in caplog.text
    assert batches.seen[1] == [("b",), ("c",), ("d",)]


def test_nothing_runs_while_the_app_is_switched_off():
    batches = Batches()
    with thread_backend(ENABLED=False):
        dispatch.submit(one, "a", batch=batches)
        drainer = dispatch.drainer()
        for _ in range(100):
            if not drainer.busy:
                break
            threading.Event().wait(0.05)
    assert not drainer.busy
    assert batches.seen == []


def test_a_forked_process_has_a_drainer_of_its_own():
    parent = dispatch.drainer()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a new drainer, with none of the parent's waiting work
        child = dispatch.drainer()
        os.write(write, b"1" if child is not parent and not child.waiting else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert dispatch.drainer() is parent


def test_while_checkouts_keep_committing_delivery_goes_in_slices_and_rests(monkeypatch):
    """During a burst the batch runs a slice at a time and the thread rests after each as long
    as it took (the checkouts get the interpreter back); once they stop, the rest goes whole."""
    monkeypatch.setattr(dispatch, "SLICE", 3)
    monkeypatch.setattr(dispatch, "BUSY", 0.5)
    batches = Batches()
    rests = []
    real_sleep = time.sleep
    monkeypatch.setattr(time, "sleep", lambda seconds: rests.append(seconds))
    with thread_backend():
        dispatch.submit(one, "first", batch=batches)
        assert batches.started.wait(5)
        for n in range(10):  # ten commits while the first batch runs: a burst
            dispatch.submit(one, n, batch=batches)
        batches.release.set()
        drainer = dispatch.drainer()
        for _ in range(200):
            if not drainer.busy:
                break
            real_sleep(0.02)
    sizes = [len(batch) for batch in batches.seen]
    assert sum(sizes) == 11
    assert sizes[0] == 1
    assert sizes[1] == 3, "the burst's work goes a slice at a time"
    assert len(rests) > len(batches.seen), "the thread rests between slices, not only to gather"


def test_when_checkouts_are_quiet_the_waiting_work_goes_as_one_batch(monkeypatch):
    monkeypatch.setattr(dispatch, "SLICE", 3)
    monkeypatch.setattr(dispatch, "BUSY", 0.0)
    batches = Batches()
    with thread_backend():
        dispatch.submit(one, "a", batch=batches)
        assert batches.started.wait(5)
        for n in range(5):
            dispatch.submit(one, n, batch=batches)
        batches.release.set()
        assert batches.done.wait(5)
    assert [len(batch) for batch in batches.seen] == [1, 5]
