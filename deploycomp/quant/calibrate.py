"""Collect activation statistics by running the float model on calibration data.

The optimized fp32 model is run in ONNX Runtime with every tensor the QDQ policy will
quantize exposed as an extra output; each sample's values update that tensor's
:class:`~deploycomp.quant.observers.Observer` and are dropped before the next sample,
so memory stays flat however large the calibration set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping

import numpy as np
import onnx_ir as ir

from deploycomp.quant.observers import Observer, compute_range

__all__ = ["Statistics", "collect_statistics", "stream_tensors"]


@dataclass
class Statistics:
    observers: dict[str, Observer]
    samples: int

    def ranges(self, method: str) -> dict[str, tuple[float, float]]:
        return {name: compute_range(obs, method) for name, obs in self.observers.items() if obs.hist is not None}


def _with_outputs(model: ir.Model, names: list[str]) -> bytes:
    clone = ir.from_proto(ir.to_proto(model))
    values = {v.name: v for n in clone.graph for v in n.outputs}
    values.update({v.name: v for v in clone.graph.inputs})
    present = {v.name for v in clone.graph.outputs}
    for name in names:
        if name not in present and name in values:
            clone.graph.outputs.append(values[name])
    return ir.to_proto(clone).SerializeToString()


def stream_tensors(model: ir.Model, tensors: list[str], samples: Iterable[Mapping[str, np.ndarray]],
                   threads: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """The named tensors (those that exist) of the float model, one sample at a time."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(_with_outputs(model, tensors), options, providers=["CPUExecutionProvider"])
    wanted = [o.name for o in session.get_outputs() if o.name in set(tensors)]
    for feeds in samples:
        yield dict(zip(wanted, session.run(wanted, dict(feeds))))


def collect_statistics(model: ir.Model, tensors: list[str], samples: Iterable[Mapping[str, np.ndarray]],
                       threads: int | None = None, progress=None) -> Statistics:
    observers: dict[str, Observer] = {}
    count = 0
    for values in stream_tensors(model, tensors, samples, threads):
        for name, value in values.items():
            observers.setdefault(name, Observer()).update(value)
        count += 1
        if progress:
            progress(count)
    return Statistics(observers, count)
