"""The queue as the runs page shows it: the running runs with their progress and ETA, then the queued runs in the
order they will start, each with its position and, where it can be told, when it should start."""

from __future__ import annotations

from .runs import RunRecord


def queue_entries(running: list[tuple[RunRecord, dict]], queued: list[RunRecord], max_concurrent: int) -> list[dict]:
    """One entry per active run; `running` pairs each record with its progress summary (events.summarise).

    A queued run starts when a slot frees: the first queued runs get the ETAs of the running runs, soonest first
    (0 with a slot free); later ones wait for runs whose length is not known yet, so their start is None.
    """
    entries = [_entry(record, 0, progress.get("step"), progress.get("total_steps"), progress.get("eta_seconds"))
               for record, progress in running]
    free = [0.0] * max(0, max_concurrent - len(running))
    slots = free + sorted((entry["eta_seconds"] for entry in entries), key=lambda eta: (eta is None, eta or 0))
    for position, record in enumerate(queued, start=1):
        start = slots[position - 1] if position <= len(slots) else None
        entries.append({**_entry(record, position, None, None, None), "starts_in_seconds": start})
    return entries


def _entry(record: RunRecord, position: int, step: int | None, total: int | None, eta: float | None) -> dict:
    return {"id": record.id, "name": record.name, "trainer": record.trainer, "status": record.status,
            "position": position, "step": step, "total_steps": total, "eta_seconds": eta, "message": record.message}
