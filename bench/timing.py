"""Timing helpers shared by the benchmarks: per-call blocks and a load meter.

Latency is timed in blocks of ``k`` back-to-back calls (each call timed alone) so that
several runners can be interleaved round by round; the load meter estimates how much
CPU *other* processes used meanwhile, so a noisy run can be recognised as such.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def time_block(run, feeds, k: int) -> list[float]:
    """Milliseconds of each of ``k`` calls of ``run(feeds)``."""
    out = []
    for _ in range(k):
        t = time.perf_counter()
        run(feeds)
        out.append((time.perf_counter() - t) * 1e3)
    return out


def cpu_snapshot() -> tuple[float, float, float]:
    """(busy CPU s of the whole machine, CPU s of this process and its waited-for children, wall s).
    Children count as ours: a benchmark that times subprocesses must not call them other load."""
    tick = os.sysconf("SC_CLK_TCK")
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    t = os.times()
    ours = t.user + t.system + t.children_user + t.children_system
    return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / tick, ours, time.perf_counter()


def other_load(a: tuple, b: tuple) -> float:
    """Mean CPU used by *other* processes between snapshots a and b, as a fraction of all cores."""
    return max(0.0, ((b[0] - a[0]) - (b[1] - a[1])) / ((b[2] - a[2]) * (os.cpu_count() or 1)))
