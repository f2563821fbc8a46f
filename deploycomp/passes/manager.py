"""Runs a pipeline of onnx-ir passes and logs what each did.

A :class:`Pipeline` has three stages: a prologue run once (pin shapes, infer them,
lift constants), a loop run to a fixed point (fold, rewrite, clean up: one rewrite
can enable a fold and the reverse), and an epilogue run once (work that needs doing
only on the final graph, such as hashing every weight to merge duplicates). Keeping
the expensive once-only passes out of the loop halves the optimizer's time.

Each pass is wrapped in :class:`LoggedPass`, which records node counts before and
after and wall time into a shared :class:`PassLog`; the stages run under onnx-ir's
own :class:`~onnx_ir.passes.PassManager`, so its checks and error chaining apply. The
log goes into the bundle's manifest: "what did the compiler do to my model" has an
answer.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import onnx_ir as ir

from deploycomp.errors import ModelError

__all__ = ["LoggedPass", "PassLog", "PassRecord", "Pipeline", "all_nodes", "count_nodes", "run_passes"]

log = logging.getLogger(__name__)


def all_nodes(graph: ir.Graph):
    """Every node of ``graph`` and its subgraphs (cheaper than RecursiveGraphIterator,
    which the logging would otherwise pay for twice per pass)."""
    for node in graph:
        yield node
        for attr in node.attributes.values():
            if attr.type == ir.AttributeType.GRAPH:
                yield from all_nodes(attr.value)
            elif attr.type == ir.AttributeType.GRAPHS:
                for sub in attr.value:
                    yield from all_nodes(sub)


def count_nodes(model: ir.Model) -> int:
    """Nodes in the main graph and every subgraph."""
    return sum(1 for _ in all_nodes(model.graph))


@dataclass
class PassRecord:
    name: str
    stage: str
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

    def __init__(self, inner: ir.passes.PassBase, log_: PassLog, stage: str = "loop"):
        self.inner = inner
        self.log = log_
        self.stage = stage

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
            stage=self.stage,
            step=self.log.step if self.stage == "loop" else 0,
            nodes_before=before,
            nodes_after=count_nodes(result.model),
            modified=result.modified,
            seconds=time.perf_counter() - start,
        )
        self.log.records.append(rec)
        log.info("pass %-32s %5d -> %5d nodes  %.3fs", rec.name, before, rec.nodes_after, rec.seconds)
        return result


@dataclass
class Pipeline:
    prologue: list[ir.passes.PassBase] = field(default_factory=list)
    loop: list[ir.passes.PassBase] = field(default_factory=list)
    epilogue: list[ir.passes.PassBase] = field(default_factory=list)

    @property
    def passes(self) -> list[ir.passes.PassBase]:
        return [*self.prologue, *self.loop, *self.epilogue]


class _StepCounter(ir.passes.InPlacePass):
    def __init__(self, log_: PassLog):
        self.log = log_

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.log.step += 1
        return ir.passes.PassResult(model, False)


def run_passes(
    model: ir.Model, pipeline: Pipeline | Sequence[ir.passes.PassBase], max_steps: int = 4
) -> tuple[ir.Model, PassLog]:
    """Run a pipeline (a bare list of passes is a loop), the loop until nothing changes."""
    if not isinstance(pipeline, Pipeline):
        pipeline = Pipeline(loop=list(pipeline))
    plog = PassLog()
    stages: list[ir.passes.PassBase] = [LoggedPass(p, plog, "prologue") for p in pipeline.prologue]
    if pipeline.loop:
        loop = [LoggedPass(p, plog) for p in pipeline.loop] + [_StepCounter(plog)]
        stages.append(ir.passes.PassManager(loop, steps=max_steps, early_stop=True))
    stages += [LoggedPass(p, plog, "epilogue") for p in pipeline.epilogue]
    manager = ir.passes.PassManager(stages, steps=1)
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
