"""Outputs fed back as inputs: a recurrent model's state, a decoder's cache.

A streaming model (a VAD's ``stateN`` -> ``state``, a GRU's ``hidden_out`` -> ``hidden``)
is run by its application in a loop, each step fed the state the step before returned.
Judged one step at a time from the data's states, an int8 bundle can validate at 0.9997
while in the loop its state drifts to cosine 0.956 and a speech segment splits in two
(probe 68, Silero VAD on TFLite): the error feeds back. ``--feedback OUT=IN`` makes
validation run the validation samples as one stream, in order: the first step takes the
sample's own ``IN``, every later step the ``OUT`` of the step before, the reference its
own and the bundle its own, so what is judged is what the loop computes.
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Mapping, Sequence

import numpy as np

from deploycomp.errors import InputDataError, few

__all__ = ["parse_feedback", "check_feedback", "suggested_feedback", "as_stream", "describe"]


def parse_feedback(specs: Sequence[str] | Mapping[str, str] | str | None) -> dict[str, str]:
    """``["stateN=state"]`` (or ``{"stateN": "state"}``) -> ``{output: input}``."""
    if not specs:
        return {}
    if isinstance(specs, Mapping):
        items = list(specs.items())
    else:
        items = []
        for spec in [specs] if isinstance(specs, str) else specs:
            out, sep, inp = str(spec).rpartition("=")
            if not sep or not out or not inp:
                raise InputDataError(f"--feedback {spec!r}: expected OUTPUT=INPUT, e.g. stateN=state (the output "
                                     "each step returns and the input the next step takes)")
            items.append((out, inp))
    pairs: dict[str, str] = {}
    for out, inp in items:
        if out in pairs and pairs[out] != inp:
            raise InputDataError(f"--feedback {out}: given twice, to {pairs[out]} and {inp}; give one")
        if inp in pairs.values() and pairs.get(out) != inp:
            raise InputDataError(f"--feedback: input '{inp}' is fed by two outputs; give one")
        pairs[out] = inp
    return pairs


def check_feedback(feedback: Mapping[str, str], io: Mapping[str, Any], profiled: Collection[str] = ()) -> None:
    """Each pair names an output and an input of the built model with the same shape and
    dtype (a state fed back must fit where it goes), else one line naming the mismatch. An
    input with a ``--profile`` (``profiled``) may take another shape of the same rank: a
    decoder's cache grows a step each step, inside its range (the bundle checks it)."""
    inputs = {i["name"]: i for i in io["inputs"]}
    outputs = {o["name"]: o for o in io["outputs"]}
    for out, inp in feedback.items():
        if out not in outputs:
            raise InputDataError(f"--feedback {out}={inp}: the model has no output '{out}' (its outputs: "
                                 f"{few(outputs, 8)})")
        if inp not in inputs:
            raise InputDataError(f"--feedback {out}={inp}: the built model has no input '{inp}' (its inputs: "
                                 f"{few(inputs, 8)}; a frozen input is a constant)")
        o, i = outputs[out], inputs[inp]
        fits = (list(o["shape"]) == list(i["shape"]) or inp in profiled and len(o["shape"]) == len(i["shape"]))
        if not fits or o["dtype"] != i["dtype"]:
            raise InputDataError(f"--feedback {out}={inp}: output '{out}' is {o['dtype']} {_shape(o['shape'])}, "
                                 f"input '{inp}' {i['dtype']} {_shape(i['shape'])}: a value fed back must fit")


def _shape(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape)) if len(shape) else "scalar"


_NEXT_SUFFIXES = ("n", "_n", "_out", "_next", "_new")
"""Endings that make an input's name of three letters or more its next value's (``state``
-> ``stateN``; not ``x`` -> ``xn``, nor an exporter's ``audio`` -> ``audio_1``)."""

_PAIRED_SUFFIXES = (("n", "0"), ("_n", "_0"), ("_out", "_in"), ("_next", "_prev"), ("_new", "_old"))
"""Endings of a next value's name and its input's (``hn`` / ``h0``, ``h_out`` / ``h_in``)."""


def _related(out: str, inp: str) -> bool:
    """Names that say one is the next value of the other: ``stateN``/``state``,
    ``hidden_out``/``hidden``, ``hn``/``h0``, ``present_key``/``past_key``. By endings, not
    substrings: a denoiser's ``output`` is not its ``input``'s next value."""
    o, i = out.lower(), inp.lower()
    if "present" in o and o.replace("present", "past") == i:
        return True
    if len(i) >= 3 and any(o == i + suffix for suffix in _NEXT_SUFFIXES):
        return True
    return any(o.endswith(a) and i.endswith(b) and o[:-len(a)] == i[:-len(b)] and o[:-len(a)]
               for a, b in _PAIRED_SUFFIXES)


def suggested_feedback(io: Mapping[str, Any], frozen: Sequence[str] = ()) -> dict[str, str]:
    """Outputs that look like the next value of an input (the same shape and dtype, and a
    name that says so: :func:`_related`), where none was given: the summary offers
    ``--feedback`` for them."""
    out: dict[str, str] = {}
    for o in io["outputs"]:
        for i in io["inputs"]:
            if (i["name"] not in frozen and i["name"] not in out.values() and list(o["shape"]) == list(i["shape"])
                    and o["dtype"] == i["dtype"] and _related(o["name"], i["name"])):
                out[o["name"]] = i["name"]
                break
    return out


def as_stream(run: Callable[[dict], Mapping[str, np.ndarray]], samples: Sequence[Mapping[str, np.ndarray]],
              feedback: Mapping[str, str]) -> list[Mapping[str, np.ndarray]]:
    """``run`` over ``samples`` in order; with ``feedback``, every step after the first takes
    each fed-back input from the output the step before returned (each runner its own)."""
    outs: list[Mapping[str, np.ndarray]] = []
    carried: dict[str, np.ndarray] = {}
    for sample in samples:
        got = run({**sample, **carried})
        outs.append(got)
        if feedback:
            carried = {inp: np.asarray(got[out]) for out, inp in feedback.items()}
    return outs


def describe(feedback: Mapping[str, str]) -> str:
    return ", ".join(f"{o} -> {i}" for o, i in feedback.items())
