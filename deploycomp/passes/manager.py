"""Runs a pipeline of onnx-ir passes to a fixed point and logs what each did.

Each pass is wrapped in :class:`LoggedPass`, which records node counts before and
after and wall time into a shared :class:`PassLog`; the wrapped list runs under
onnx-ir's own :class:`~onnx_ir.passes.PassManager`, so requires/ensures checks and its
error chaining (which pass failed, after which) come from there. The log goes into
the bundle's manifest, so "what did the compiler do to my model" has an answer.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import onnx_ir as ir

from deploycomp.errors import ModelError

__all__ = ["LoggedPass", "PassLog", "PassRecord", "count_nodes", "run_passes"]

log = logging.getLogger(__name__)


def count_nodes(model: ir.Model) -> int:
    """Nodes in the main graph and every subgraph."""
    return sum(1 for _ in ir.traversal.RecursiveGraphIterator(model.graph))


@dataclass
class PassRecord:
    name: str
    step: int
    nodes_before: int
    nodes_after: int
    modified: bool
    seconds: float


@dataclass
class PassLog:
    records: list[PassRecord] = field(default_factory=list)
    step: int = 0
    current: str = ""

    def to_json(self) -> list[dict]:
        return [asdict(r) | {"seconds": round(r.seconds, 4)} for r in self.records]


class LoggedPass(ir.passes.PassBase):
    """Transparent wrapper: same in-place semantics as the inner pass, plus a log entry."""

    def __init__(self, inner: ir.passes.PassBase, log_: PassLog):
        self.inner = inner
        self.log = log_

    @property
    def in_place(self) -> bool:
        return self.inner.in_place

    @property
    def changes_input(self) -> bool:
        return self.inner.changes_input

    def __str__(self) -> str:
        return getattr(self.inner, "name", None) or type(self.inner).__name__

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.log.current = str(self)
        before = count_nodes(model)
        start = time.perf_counter()
        result = self.inner(model)
        rec = PassRecord(
            name=str(self),
            step=self.log.step,
            nodes_before=before,
            nodes_after=count_nodes(result.model),
            modified=result.modified,
            seconds=time.perf_counter() - start,
        )
        self.log.records.append(rec)
        log.info("pass %-32s %5d -> %5d nodes  %.3fs", rec.name, before, rec.nodes_after, rec.seconds)
        return result


class _StepCounter(ir.passes.InPlacePass):
    def __init__(self, log_: PassLog):
        self.log = log_

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.log.step += 1
        return ir.passes.PassResult(model, False)


def run_passes(model: ir.Model, passes: Sequence[ir.passes.PassBase], max_steps: int = 4) -> tuple[ir.Model, PassLog]:
    """Run ``passes`` in order, repeating until none modifies the model (or ``max_steps``)."""
    plog = PassLog()
    wrapped = [LoggedPass(p, plog) for p in passes] + [_StepCounter(plog)]
    manager = ir.passes.PassManager(wrapped, steps=max_steps, early_stop=True)
    try:
        result = manager(model)
    except ir.passes.PassError as e:
        root: BaseException = e
        while root.__cause__ is not None:
            root = root.__cause__
        done = [r.name for r in plog.records]
        raise ModelError(
            f"pass {plog.current} failed after {len(done)} passes: {type(root).__name__}: {root}".splitlines()[0]
        ) from e
    return result.model, plog
