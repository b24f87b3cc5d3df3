"""The queue's order on disk: moves are one atomic write each, read back by a new store (a restarted server), and
the queue view's positions and start estimates. No trainer is started: moving never ticks the queue."""

from __future__ import annotations

import math

import pytest

from library.gui.queue_view import queue_entries
from library.gui.runs import QUEUED, RUNNING, RunRecord, RunStore
from library.gui.scheduler import QueueError, Scheduler
from library.gui.settings import GuiSettings


def _scheduler(root) -> Scheduler:
    settings = GuiSettings(workdir=root, runs_root=root / "runs", model_roots=[], dataset_roots=[], configs_dir=root)
    return Scheduler(settings, RunStore(settings.runs_root))


def _queue(scheduler: Scheduler, *names: str) -> list[str]:
    return [scheduler.store.create(name, lambda folder: "").id for name in names]


def _order(scheduler: Scheduler) -> list[str]:
    return [record.name for record in scheduler.queued()]


def test_moves_reorder_the_queue_and_a_new_store_reads_the_same_order(tmp_path):
    scheduler = _scheduler(tmp_path)
    a, b, c = _queue(scheduler, "a", "b", "c")
    assert _order(scheduler) == ["a", "b", "c"]
    assert scheduler.move(c, "up").id == c
    assert _order(scheduler) == ["a", "c", "b"]
    scheduler.move(a, "down")
    assert _order(scheduler) == ["c", "a", "b"]
    scheduler.move(c, "down")
    scheduler.move(b, "up")
    assert _order(scheduler) == ["a", "b", "c"] == _order(_scheduler(tmp_path))   # what a restarted server reads
    assert [scheduler.store.load(run).status for run in (a, b, c)] == [QUEUED] * 3


def test_a_move_writes_one_record_only(tmp_path):
    scheduler = _scheduler(tmp_path)
    ids = _queue(scheduler, "a", "b", "c", "d")
    before = {run: (scheduler.store.folder(run) / "run.json").read_bytes() for run in ids}
    scheduler.move(ids[3], "up")
    changed = [run for run in ids if (scheduler.store.folder(run) / "run.json").read_bytes() != before[run]]
    assert changed == [ids[3]]


def test_orders_too_close_to_split_are_spaced_out_again(tmp_path):
    scheduler = _scheduler(tmp_path)
    a, b, c = _queue(scheduler, "a", "b", "c")
    for run, order in ((a, 1000.0), (b, math.nextafter(1000.0, 2000.0)), (c, 2000.0)):
        record = scheduler.store.load(run)
        record.order = order
        scheduler.store.save(record)
    scheduler.move(c, "up")   # no float lies strictly between a's order and b's
    assert _order(scheduler) == ["a", "c", "b"] == _order(_scheduler(tmp_path))
    orders = [record.order for record in scheduler.queued()]
    assert len(set(orders)) == 3


def test_moves_that_do_not_fit_are_refused(tmp_path):
    scheduler = _scheduler(tmp_path)
    a, b = _queue(scheduler, "a", "b")
    with pytest.raises(QueueError, match="already first"):
        scheduler.move(a, "up")
    with pytest.raises(QueueError, match="already last"):
        scheduler.move(b, "down")
    scheduler.stop(a)   # cancelled
    with pytest.raises(QueueError, match="is cancelled; only a queued run can be moved"):
        scheduler.move(a, "down")
    assert _order(scheduler) == ["b"]


def _record(name: str, status: str = QUEUED) -> RunRecord:
    return RunRecord(id=name, name=name, status=status)


def test_queued_runs_start_when_the_soonest_slot_frees():
    running = [(_record("slow", RUNNING), {"step": 2, "total_steps": 10, "eta_seconds": 300.0}),
               (_record("fast", RUNNING), {"step": 8, "total_steps": 10, "eta_seconds": 20.0})]
    entries = queue_entries(running, [_record("q1"), _record("q2"), _record("q3")], max_concurrent=2)
    assert [(entry["id"], entry["position"]) for entry in entries] == [
        ("slow", 0), ("fast", 0), ("q1", 1), ("q2", 2), ("q3", 3)]
    assert [entry["starts_in_seconds"] for entry in entries[2:]] == [20.0, 300.0, None]
    assert entries[0]["eta_seconds"] == 300.0 and entries[0]["step"] == 2

    free_slot = queue_entries(running[:1], [_record("q1"), _record("q2")], max_concurrent=2)
    assert [entry["starts_in_seconds"] for entry in free_slot[1:]] == [0.0, 300.0]
    unknown = queue_entries([(_record("setup", RUNNING), {})], [_record("q1")], max_concurrent=1)
    assert unknown[1]["starts_in_seconds"] is None   # the run ahead has no step yet, so no ETA
