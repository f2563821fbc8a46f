"""How much of this process's CPUs other processes used while a latency was timed.

A latency measured on a machine where something else computes is that machine's under
load, steady or not: a fleet's second worker building beside a ``host`` cell made
YOLOv8n's fp16 bundle read 53 ms against 16-20 ms built alone, with a p90 close to its
median (so :func:`deploycomp.validate.unsteady`'s spread test did not see it). Linux's
``/proc/stat`` counts every CPU's busy time and ``/proc/self/stat`` this process's own:
their difference over the timed runs, on the CPUs this process may run on, is what the
rest of the machine took. A latency record carries it as ``busy_elsewhere`` (a share of
those CPUs' time, 0-1), which the summary, the report and ``deploycomp diff`` read.
Elsewhere than Linux nothing is recorded.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["BUSY_ELSEWHERE", "MIN_WINDOW_SECONDS", "OthersCpu", "busy_note", "is_busy"]

BUSY_ELSEWHERE = 0.25
"""A share of this process's CPUs' time other processes took, from which a latency timed
then is said to be measured on a busy machine (an idle one here reads 0-0.05; a second
build beside it on 2 cores, ~0.5)."""

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user, nice, system, irq, softirq, steal (not idle, iowait)


def _cpus() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _ticks() -> tuple[int, int] | None:
    """(busy ticks of this process's CPUs, this process's own user + system ticks), or
    None where ``/proc`` does not say them."""
    cpus = _cpus()
    try:
        stat = Path("/proc/stat").read_text().splitlines()
        own = Path("/proc/self/stat").read_text()
    except OSError:
        return None
    busy = 0
    for line in stat:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        values = [int(f) for f in fields]
        busy += sum(values[i] for i in _BUSY_FIELDS if i < len(values))
    after_comm = own[own.rindex(")") + 2:].split()  # (the command's name may hold spaces)
    return busy, int(after_comm[11]) + int(after_comm[12])  # fields 14, 15: utime, stime


MIN_WINDOW_SECONDS = 0.25
"""The shortest span a share is read over: the kernel counts CPU time in ticks (10 ms),
and over a few short runs (a tiny model's 0.1 ms each, timed one by one) the tick that
fell in a run was charged to whoever it sampled, which read as 100% busy on an idle
machine."""


class OthersCpu:
    """The span from the first timed run's start (:meth:`start`) to the last one's end
    (:meth:`stop`), and the share of this process's CPUs' time other processes used over it
    (:meth:`share`): one span, not the runs' windows summed, since this process's own work
    between runs is its own and counted as such."""

    def __init__(self):
        self.first: tuple[float, tuple[int, int] | None] | None = None
        self.last: tuple[float, tuple[int, int] | None] | None = None

    def start(self) -> None:
        if self.first is None:
            self.first = (time.perf_counter(), _ticks())

    def stop(self) -> None:
        self.last = (time.perf_counter(), _ticks())

    def share(self) -> float | None:
        """Other processes' share of this process's CPUs' time over the span (0-1), or None
        where it could not be read or the span is shorter than :data:`MIN_WINDOW_SECONDS`."""
        if self.first is None or self.last is None or self.first[1] is None or self.last[1] is None:
            return None
        seconds = self.last[0] - self.first[0]
        if seconds < MIN_WINDOW_SECONDS:
            return None
        (busy0, own0), (busy1, own1) = self.first[1], self.last[1]
        cpus = len(_cpus() or ()) or os.cpu_count() or 1  # (every CPU's line was counted where affinity is unknown)
        return round(min(1.0, max(0, (busy1 - busy0) - (own1 - own0)) / (seconds * _CLK_TCK * cpus)), 2)


def is_busy(share: float | None) -> bool:
    """Whether a recorded ``busy_elsewhere`` share says the latency was timed on a busy
    machine (:data:`BUSY_ELSEWHERE`; unknown is not busy): the one test the summary, the
    report, ``diff`` and a fleet's page make."""
    return (share or 0.0) >= BUSY_ELSEWHERE


def busy_note(*records) -> str | None:
    """Where any latency record was timed on a busy machine (:func:`is_busy`): a note
    saying how busy."""
    share = max((r.get("busy_elsewhere") or 0.0 for r in records if r), default=0.0)
    if not is_busy(share):
        return None
    return (f"timed while other processes used {share:.0%} of this machine's CPUs: "
            "build again on an idle machine (a fleet: --jobs 1) to time it")
