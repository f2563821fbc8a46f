"""``deploycomp diff OLD NEW``: what changed between two bundles or two fleet indexes, and
whether NEW regressed past the thresholds a CI job sets.

A CI job builds a branch's fleet and compares it with main's; the question it asks is
"did anything get worse by more than I tolerate?", and the answer must be an exit code,
not prose. Everything compared here is read from the manifests (and a fleet's
``index.json``), never re-measured: a diff is as cheap as reading two JSON files, and
says nothing the builds did not record.

What is compared, one row per changed metric:

- fidelity per output: cosine, max abs/rel error, top-1 agreement, uninformative
  samples, quiet error, NaN/Inf counts (each against fp32 ONNX Runtime, as validated);
- budgets whose verdict changed (met -> missed and back), and every budget NEW misses;
- latency, only between numbers of the same kind: a measurement on this machine is
  never compared with a roofline estimate (nor a measurement with one taken on a
  different CPU): such a pair is flagged *not comparable* instead of passing or failing
  on a meaningless ratio;
- artifact size, peak memory;
- requested and executed precision, compute layers by runtime precision (OpenVINO's
  per-layer record, TFLite's int8/float op split), layers that moved between int8 and
  float (named where both sides are int8), the int8 share of MACs;
- op counts of the optimized graph and of the lowered model (TFLite ops).

Thresholds (``--max-regression``), a comma-separated list of ``KEY=LIMIT``; each LIMIT
is how much worse NEW may be than OLD, and exceeding it (strictly) is a regression:

- ``cosine=0.001``: any output's cosine may drop by at most 0.001 (absolute);
- ``top1=0.01``: top-1 agreement (0..1) may drop by at most 0.01 (absolute);
- ``iou=0.02``: an output's box or mask IoU (``--judge-boxes``, ``--judge-mask``) may
  drop by at most 0.02 (absolute);
- ``latency=10%`` or ``latency=2ms`` (also ``us``, ``s``): relative or absolute rise;
- ``size=5%`` or ``size=1MB`` (also ``B``, ``KB``, ``GB``; decimal, as the manifest):
  the artifacts' total bytes;
- ``memory=20%`` or ``memory=50MB``: the measured peak memory;
- ``nodes=0`` or ``nodes=5%``: the optimized graph's node count.

A latency, size or memory limit needs its unit (``latency=10`` is refused: 10 % or
10 ms?); cosine, top-1 and IoU take plain numbers (a percentage of a cosine reads two ways).
Metrics without a threshold are reported, never gated. Measured latency and memory vary
run to run (two builds of the same inputs differ in nothing else): limit them loosely,
and only between runs on the same kind of machine. Whatever the thresholds, two
things are always regressions: NEW misses one of its own budgets (a bundle kept with
``--no-fail``, or an index entry whose budgets were not met), and a fleet entry that
failed to build. Entries added to or removed from a fleet are listed, not gated: a
spec change is deliberate, and a failed build is recorded in the index, not dropped.

Exit code: :data:`REGRESSION_EXIT` when there is a regression (see
:class:`RegressionError`), 0 otherwise; unreadable inputs and bad threshold syntax are
one-line :class:`~deploycomp.errors.DeployError` s (2).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from deploycomp.cpu_load import is_busy
from deploycomp.bundle import MANIFEST, read_manifest
from deploycomp.errors import DeployError, RegressionError, few
from deploycomp.digest import sha256_file

__all__ = ["REGRESSION_EXIT", "Diff", "Limit", "RegressionError", "Row", "diff", "diff_bundles", "diff_indexes",
           "parse_thresholds"]

INDEX = "index.json"

REGRESSION_EXIT = RegressionError.exit_code
"""Proposed exit code for "NEW regressed": not 8 (a budget missed *while building*), so a CI
script can tell "this build is out of budget" from "this branch is worse than main"."""


# ---------------------------------------------------------------------------- thresholds

_UNITS: dict[str, dict[str, float]] = {
    # key -> accepted absolute units and their factor to the unit the manifest stores
    "cosine": {"": 1.0},
    "top1": {"": 1.0},
    "iou": {"": 1.0},
    "latency": {"ms": 1.0, "s": 1e3, "us": 1e-3},
    "size": {"b": 1.0, "kb": 1e3, "mb": 1e6, "gb": 1e9},  # bytes, decimal as the manifest's MB
    "memory": {"mb": 1.0, "gb": 1e3},
    "nodes": {"": 1.0},
}
_RELATIVE_OK = {"latency", "size", "memory", "nodes"}
_LIMIT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*(%|[a-z]*)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Limit:
    """How much worse one metric may get: ``value`` is a fraction when ``relative``
    (``10%`` -> 0.1), else an amount in the manifest's unit (ms, bytes, MB, nodes)."""

    key: str
    value: float
    relative: bool
    text: str

    def exceeded(self, old: float, new: float) -> bool:
        """True when ``new`` is worse than ``old`` by more than the limit; ``old`` and
        ``new`` are oriented so that larger is worse (a drop is passed negated). A
        relative limit on a metric that was 0 is exceeded by any rise."""
        worse = new - old
        if self.relative:
            return worse > 0 if old == 0 else worse / abs(old) > self.value
        return worse > self.value


def parse_thresholds(spec: str | Iterable[str] | Mapping[str, Limit] | None) -> dict[str, Limit]:
    """``"cosine=0.001,latency=10%"`` (or several such strings, as a repeated option
    gives) -> ``{key: Limit}``. Every mistake is a one-line :class:`DeployError` naming
    the offending item and what would be accepted."""
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        return dict(spec)
    items = [spec] if isinstance(spec, str) else list(spec)
    parts = [p.strip() for item in items for p in item.split(",") if p.strip()]
    if not parts and any(i.strip() for i in items):
        raise DeployError("--max-regression: nothing given; use KEY=LIMIT[,KEY=LIMIT...], e.g. cosine=0.001,latency=10%")
    limits: dict[str, Limit] = {}
    known = ", ".join(_UNITS)
    for part in parts:
        key, eq, value = part.partition("=")
        key = key.strip().lower()
        if not eq or not value.strip():
            raise DeployError(f"--max-regression {part!r}: expected KEY=LIMIT (keys: {known}), e.g. cosine=0.001")
        if key not in _UNITS:
            raise DeployError(f"--max-regression {part!r}: unknown metric {key!r}; choose from {known}")
        if key in limits:
            raise DeployError(f"--max-regression: {key} given twice ({limits[key].text}, {value.strip()})")
        match = _LIMIT.match(value)
        if not match:
            raise DeployError(f"--max-regression {part!r}: {value.strip()!r} is not a non-negative number with a unit")
        number, unit = float(match.group(1)), match.group(2).lower()
        if unit == "%":
            if key not in _RELATIVE_OK:
                raise DeployError(f"--max-regression {part!r}: {key} takes an absolute drop (e.g. {key}=0.001), not %")
            limits[key] = Limit(key, number / 100, True, value.strip())
            continue
        units = _UNITS[key]
        if unit not in units:
            accepted = " or ".join(["N%"] * (key in _RELATIVE_OK) + [f"N{u}" for u in units if u])
            if not unit and accepted:
                raise DeployError(f"--max-regression {part!r}: give a unit, {accepted} (e.g. {key}={number:g}%)")
            raise DeployError(f"--max-regression {part!r}: unit {unit!r} not understood; {key} takes "
                              f"{accepted or 'a plain number'}")
        limits[key] = Limit(key, number * units[unit], False, value.strip())
    return limits


def _thresholds_text(limits: Mapping[str, Limit]) -> str:
    return ",".join(f"{k}={lim.text}" for k, lim in limits.items())


# ---------------------------------------------------------------------------- the result

@dataclass
class Row:
    """One changed metric. ``old``/``new`` are the manifest's values (None where a side
    has none); ``change`` says it for a person; ``regression`` is why this row fails
    the gate (None if it does not); ``comparable`` is False where the two sides measure
    different things (latency measured vs estimated), so no verdict is possible."""

    metric: str
    old: Any
    new: Any
    change: str = ""
    scope: str = ""
    """The fleet entry, ``model/target/precision``; empty for a diff of two bundles."""
    regression: str | None = None
    comparable: bool = True
    note: str = ""
    shown: tuple[str, str] = ("", "")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["shown"]
        return data


@dataclass
class Diff:
    """Everything that differs between OLD and NEW, and the verdict of the gate."""

    old: str
    new: str
    kind: str
    """``"bundles"`` or ``"indexes"``."""
    thresholds: dict[str, Limit] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    same_artifacts: bool = False
    """Two bundles whose artifact files are byte for byte the same (their sha256): what
    differs is then measurement, not the build."""

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.regression]

    @property
    def not_comparable(self) -> list[Row]:
        return [r for r in self.rows if not r.comparable]

    @property
    def ok(self) -> bool:
        return not self.regressions

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else REGRESSION_EXIT

    def summary(self) -> str:
        """One line: the verdict, naming the regressed metrics."""
        gate = f" (--max-regression {_thresholds_text(self.thresholds)})" if self.thresholds else ""
        if self.regressions:
            names = [f"{r.scope}: {r.metric}" if r.scope else r.metric for r in self.regressions]
            # (a board's tighter size budget over the same files had been said "measurements moved")
            limits = {r.metric.partition(":")[2] for r in self.rows if r.metric.startswith("limit:")}
            moved = ("budgets moved" if any(r.metric.partition(":")[2] in limits for r in self.regressions)
                     else "measurements moved")
            same = f" (the artifacts are byte-identical: {moved})" if self.same_artifacts else ""
            return f"{len(names)} regression{'s' * (len(names) != 1)}: {few(names)}{gate}{same}"
        same = "; the artifacts are byte-identical" if self.same_artifacts else ""
        if not self.rows:
            return f"no differences{gate}{same}"
        extra = f", {len(self.not_comparable)} not comparable" if self.not_comparable else ""
        return f"no regressions{gate}: {len(self.rows)} change{'s' * (len(self.rows) != 1)}{extra}{same}"

    def table(self) -> str:
        """The human output: a header, one line per changed metric, the verdict."""
        lines = [f"old: {self.old}", f"new: {self.new}"]
        if self.rows:
            scoped = any(r.scope for r in self.rows)
            head = (["entry"] if scoped else []) + ["metric", "old", "new", "change", ""]
            body = []
            for r in self.rows:
                verdict = (f"REGRESSION: {r.regression}" if r.regression
                           else f"not comparable: {r.note}" if not r.comparable else r.note)
                body.append(([r.scope] if scoped else []) + [r.metric, *r.shown, r.change, verdict])
            widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
            for cells in [head, *body]:
                lines.append("  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip())
        lines.append(self.summary())
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "old": self.old, "new": self.new, "kind": self.kind, "ok": self.ok, "exit_code": self.exit_code,
            "thresholds": {k: {"limit": lim.value, "relative": lim.relative, "text": lim.text}
                           for k, lim in self.thresholds.items()},
            "summary": self.summary(), "same_artifacts": self.same_artifacts,
            "regressions": [f"{r.scope}: {r.metric}: {r.regression}" if r.scope else f"{r.metric}: {r.regression}"
                            for r in self.regressions],
            "changes": [r.to_json() for r in self.rows],
        }

    def raise_if_regressed(self) -> None:
        """For the CLI: a regression ends the command with :data:`REGRESSION_EXIT` and the
        one-line summary (the table is printed first)."""
        if not self.ok:
            raise RegressionError(self.summary())


# ---------------------------------------------------------------------------- formatting

def _fmt_cos(v: float | None) -> str:
    return "-" if v is None else f"{v:.7f}"


def _fmt_g(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _fmt_limit(v: Any) -> str:
    """A budget's limit as it was written: a cosine limit of 0.99999 had printed as "1"."""
    return "-" if v is None else repr(v) if isinstance(v, float) else str(v)


def _fmt_bytes(v: float | None) -> str:
    if v is None:
        return "-"
    for unit, factor in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(v) >= factor:
            return f"{v / factor:.3g} {unit}"
    return f"{v:.0f} B"


def _fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g} ms"


def _fmt_mb(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g} MB"


def _relative(old: float | None, new: float | None) -> str:
    if old is None or new is None:
        return ""
    if old == 0:
        return "" if new == 0 else "from 0"
    return f"{(new - old) / abs(old):+.1%}"


def _delta(old: float | None, new: float | None, fmt: str = "+.2e") -> str:
    return "" if old is None or new is None else format(new - old, fmt)


# ---------------------------------------------------------------------------- comparing

class _Rows:
    """Collects rows for one pair of sides, judging each against the thresholds."""

    def __init__(self, limits: Mapping[str, Limit], scope: str = ""):
        self.limits, self.scope, self.rows = limits, scope, []

    def add(self, metric: str, old: Any, new: Any, *, fmt: Callable[[Any], str] = _fmt_g, change: str = "",
            gate: str | None = None, lower_is_worse: bool = False, regression: str | None = None,
            comparable: bool = True, note: str = "") -> None:
        """A row if ``old != new`` (or a regression/incomparability is forced). ``gate``
        names the threshold that judges it; numbers are oriented so larger is worse."""
        if _same(old, new) and regression is None and comparable:
            return
        limit = self.limits.get(gate) if gate else None
        if regression is None and comparable and limit and isinstance(old, (int, float)) and isinstance(new, (int, float)):
            o, n = (-old, -new) if lower_is_worse else (old, new)
            if limit.exceeded(o, n):
                unit, factor = {"latency": (" ms", 1), "size": (" MB", 1e-6), "memory": (" MB", 1)}.get(gate, ("", 1))
                by = f"{(n - o) / abs(o):.1%}" if limit.relative and o else f"{abs(n - o) * factor:.3g}{unit}"
                regression = f"{'fell' if lower_is_worse else 'rose'} by {by}, more than {gate}={limit.text} allows"
        self.rows.append(Row(metric, old, new, change, self.scope, regression, comparable, note, (fmt(old), fmt(new))))


def _same(old: Any, new: Any) -> bool:
    """Equal, floats to 12 significant digits: a cosine of 0.9999999999999999 against 1.0
    is summation order, not a change anyone should read."""
    if isinstance(old, float) and isinstance(new, float):
        return math.isclose(old, new, rel_tol=1e-12)
    return old == new


def _get(data: Any, *path: str, default: Any = None) -> Any:
    for key in path:
        if not isinstance(data, Mapping) or key not in data:
            return default
        data = data[key]
    return data


@dataclass(frozen=True)
class _Timing:
    """A bundle's latency as diff compares it: milliseconds, its kind (measured on which
    CPU, or whose roofline estimate) and, where measured, the share of its CPUs other
    processes used meanwhile (:mod:`deploycomp.cpu_load`)."""

    ms: float | None
    kind: str
    busy: float | None = None
    basis: Any = None
    """An estimate's: the profile's peaks and bandwidth it was made from."""

    @property
    def said(self) -> str:
        """The kind, and where the machine was busy, that: such a number is no measure of
        the bundle's change (a fleet's host cell read 53 ms built beside another build,
        16-20 ms alone)."""
        busy = f", busy ({self.busy:.0%} of its CPUs used by other processes)" if is_busy(self.busy) else ""
        return self.kind + busy


def _latency(manifest: Mapping[str, Any]) -> _Timing:
    """Measured on this machine where the target is this machine, else the roofline
    estimate the build labelled as such. The kind names the CPU a measurement was taken
    on, so two measurements on different machines differ in kind."""
    measured = _get(manifest, "measured", "latency", "median_ms")
    if measured is not None:
        return _Timing(measured, f"measured on {_get(manifest, 'host', 'cpu', default='?')}",
                       _get(manifest, "measured", "latency", "busy_elsewhere"))
    estimate = _get(manifest, "validation", "latency_estimate", "estimate_ms")
    if estimate is not None:
        return _Timing(estimate, f"roofline estimate for {_get(manifest, 'target', 'name', default='?')}",
                       basis=_get(manifest, "target", "profile", "compute"))
    return _Timing(None, "none")


def _latency_kind(kind: str) -> str:
    """The kind of latency, without where: measured or estimate (an index entry's
    ``latency_kind`` may say either in its own words)."""
    kind = (kind or "").lower()
    if "estim" in kind or "roofline" in kind:
        return "estimate"
    if "measur" in kind:
        return "measured"
    return kind or "none"


def _compare_latency(rows: _Rows, old: _Timing, new: _Timing) -> None:
    if old.ms is None and new.ms is None:
        return
    busy = is_busy(old.busy) or is_busy(new.busy)
    if old.kind.startswith("measured on ") and new.kind.startswith("measured on "):
        same_kind = old.kind == new.kind and not busy  # the same idle machine, or the ratio says nothing
    elif old.basis is not None and new.basis is not None:  # estimates from the same peaks (a Pi's
        same_kind = old.basis == new.basis  # against a phone's had been compared as +55.8%)
    else:
        same_kind = _latency_kind(old.kind) == _latency_kind(new.kind) and not busy
    if not same_kind:
        rows.add("latency", old.ms, new.ms, fmt=_fmt_ms, comparable=False, note=f"{old.said} vs {new.said}")
        return
    rows.add("latency", old.ms, new.ms, fmt=_fmt_ms, change=_relative(old.ms, new.ms), gate="latency",
             note=_latency_kind(new.kind))


def _outputs(rows: _Rows, old: Mapping[str, Mapping], new: Mapping[str, Mapping]) -> None:
    for name in sorted(set(old) | set(new)):
        if name not in old:
            rows.add(f"output[{name}]", None, "present", comparable=False, note="output only on one side")
            continue
        if name not in new:  # what a gate guards: an output the new bundle no longer gives
            rows.add(f"output[{name}]", "present", None, note="output only in OLD",
                     regression="gone from NEW" if rows.limits else None)
            continue
        o, n = old[name], new[name]
        rows.add(f"cosine[{name}]", o.get("cosine"), n.get("cosine"), fmt=_fmt_cos,
                 change=_delta(o.get("cosine"), n.get("cosine"), "+.1e"), gate="cosine", lower_is_worse=True)
        rows.add(f"top1_agreement[{name}]", o.get("top1_agreement"), n.get("top1_agreement"),
                 change=_delta(o.get("top1_agreement"), n.get("top1_agreement"), "+.3f"), gate="top1",
                 lower_is_worse=True)
        for metric in ("box_iou", "mask_iou", "mask_regions"):  # (a mask's IoU 1.000 -> 0.981 had no row)
            if metric in o or metric in n:
                rows.add(f"{metric}[{name}]", o.get(metric), n.get(metric),
                         change=_delta(o.get(metric), n.get(metric), "+.3f"), gate="iou", lower_is_worse=True)
        for metric in ("max_abs_error", "max_rel_error", "quiet_error"):
            rows.add(f"{metric}[{name}]", o.get(metric), n.get(metric), change=_delta(o.get(metric), n.get(metric)))
        for metric in ("uninformative_samples", "nonfinite"):  # absent means none
            rows.add(f"{metric}[{name}]", o.get(metric, 0), n.get(metric, 0),
                     change=_delta(o.get(metric, 0), n.get(metric, 0), "+d"))


def _budgets(manifest: Mapping[str, Any]) -> dict[str, dict]:
    checks = (_get(manifest, "validation", "budgets", default=[]) or []) + \
             (_get(manifest, "measured", "budgets", default=[]) or [])
    return {c["budget"]: c for c in checks}


def _compare_budgets(rows: _Rows, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """A row where a budget's verdict changed, and for every budget NEW misses (the
    build's own verdict: a regression whatever OLD did)."""
    ob, nb = _budgets(old), _budgets(new)
    for name in sorted(set(ob) | set(nb)):
        o, n = ob.get(name), nb.get(name)
        o_ok = None if o is None else o["ok"]
        n_ok = None if n is None else n["ok"]
        if n_ok is False:
            why = "still missed" if o_ok is False else "now missed"
            rows.add(f"budget:{name}", o_ok, n_ok, fmt=_verdict, change=_budget_change(o, n),
                     regression=f"{why}: {_fmt_g(n['value'])}{n.get('unit', '')} against {_fmt_limit(n['limit'])}"
                                f"{n.get('unit', '')}")
        elif o_ok is not n_ok:
            rows.add(f"budget:{name}", o_ok, n_ok, fmt=_verdict, change=_budget_change(o, n),
                     note="now met" if o_ok is False else "")
        ol, nl = (None if c is None else c.get("budget_limit", c["limit"]) for c in (o, n))  # (not a floor's)
        if ol is not None and nl is not None and not _same(ol, nl):
            # a gate passing because its budget moved is not the bundle getting better
            at_most = n.get("at_most", bool(n.get("unit")))  # (older manifests: only sizes and times have units)
            looser = nl > ol if at_most else nl < ol
            rows.add(f"limit:{name}", ol, nl, fmt=_fmt_limit, change=_delta(ol, nl, "+.4g"),
                     note=f"the budget is {'looser' if looser else 'stricter'}")


def _verdict(ok: bool | None) -> str:
    return {True: "met", False: "missed", None: "-"}[ok]


def _budget_change(o: Mapping | None, n: Mapping | None) -> str:
    def said(c):
        return "-" if c is None else f"{_fmt_g(c['value'])}/{_fmt_g(c['limit'])}{c.get('unit', '')}"
    return f"{said(o)} -> {said(n)}"


def _layer_precisions(manifest: Mapping[str, Any]) -> dict[str, dict[str, int]] | None:
    """Compute layers by runtime precision, ``{layer type: {precision: count}}``, from
    what the backend recorded: OpenVINO's compiled model (``layer:activations:kernel``
    counts), TFLite's op counts and the ops it left float. None where a backend
    records neither (the comparison is then by executed precision only)."""
    runtime = _get(manifest, "backend", "runtime", default={}) or {}
    lowered = _get(manifest, "backend", "lowered", default={}) or {}
    out: dict[str, dict[str, int]] = {}
    if isinstance(runtime.get("compute_layer_precisions"), Mapping):
        for key, count in runtime["compute_layer_precisions"].items():
            layer, _, rest = key.partition(":")
            precision = rest.split(":")[0] or "?"
            out.setdefault(layer, {}).setdefault(precision, 0)
            out[layer][precision] += count
        return out
    if lowered.get("format") == "tflite" and isinstance(lowered.get("ops"), Mapping):
        float_ops = lowered.get("float_ops") or {}
        int8 = lowered.get("precision") == "int8"
        float_name = "fp32"  # TFLite fp16 stores f16 weights and computes in fp32
        for op, count in lowered["ops"].items():
            if op in ("QUANTIZE", "DEQUANTIZE"):
                continue
            floats = float_ops.get(op, 0) if int8 else count
            for precision, n in (("int8", count - floats), (float_name, floats)):
                if n:
                    out.setdefault(op, {})[precision] = n
        return out
    return None


def _fmt_precisions(counts: Mapping[str, int] | None) -> str:
    if not counts:
        return "-"
    return " ".join(f"{p} x{n}" for p, n in sorted(counts.items()))


def _compare_precision(rows: _Rows, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    rows.add("precision", old.get("precision"), new.get("precision"))
    rows.add("executed_precision", _get(old, "backend", "runtime", "executed_precision"),
             _get(new, "backend", "runtime", "executed_precision"))
    ol, nl = _layer_precisions(old), _layer_precisions(new)
    if ol is not None and nl is not None and _same_backend(old, new):  # layer names are the backend's own
        for layer in sorted(set(ol) | set(nl)):
            o, n = ol.get(layer), nl.get(layer)
            if (o or {}) != (n or {}):
                rows.add(f"layers:{layer}", o, n, fmt=_fmt_precisions)
    oq, nq = old.get("quantization") or {}, new.get("quantization") or {}
    if oq or nq:
        total = next((q["int8_layers"] + len(q.get("float_layers", [])) + len(q.get("dynamic_layers") or [])
                      for q in (nq, oq) if "int8_layers" in q), None)
        o8, n8 = oq.get("int8_layers", 0), nq.get("int8_layers", 0)
        rows.add("int8_layers", o8, n8, change=f"{n8 - o8:+d}" + (f" of {total}" if total is not None else ""),
                 note="float -> int8" if n8 > o8 else "int8 -> float")
        od, nd = len(oq.get("dynamic_layers") or []), len(nq.get("dynamic_layers") or [])
        if od or nd:  # int8 weights, inputs quantized per sample (deploycomp.quant.dynamic)
            rows.add("dynamic_layers", od, nd, change=f"{nd - od:+d}")
        def share(q):  # a float build runs no MAC in int8
            return q.get("int8_mac_share") if q else 0.0

        rows.add("int8_mac_share", share(oq), share(nq), change=_delta(share(oq), share(nq), "+.3f"))
        if oq and nq:  # both int8: name the layers that moved
            of, nf = set(oq.get("float_layers", [])), set(nq.get("float_layers", []))
            for name in sorted(nf - of):
                rows.add(f"layer:{name}", "int8", "float", note="int8 -> float")
            for name in sorted(of - nf):
                rows.add(f"layer:{name}", "float", "int8", note="float -> int8")
        else:
            kept = sorted((nq or oq).get("float_layers", []))
            if kept:
                rows.add("float_layers", None if nq else kept, kept if nq else None, fmt=lambda v: few(v) if v else "-",
                         note="layers the int8 side keeps float")


def _compare_ops(rows: _Rows, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    on, nn = _get(old, "graph", "nodes"), _get(new, "graph", "nodes")
    rows.add("nodes", on, nn, change=_delta(on, nn, "+d") if on is not None and nn is not None else "", gate="nodes",
             note="optimized ONNX graph")
    sections = [(("graph", "op_histogram"), "ops")]
    if _same_backend(old, new):  # TFLite's ops against OpenVINO's would be all adds and removes
        sections.append((("backend", "lowered", "ops"), "lowered_ops"))
    for section, prefix in sections:
        oh, nh = _get(old, *section, default={}) or {}, _get(new, *section, default={}) or {}
        for op in sorted(set(oh) | set(nh)):
            o, n = oh.get(op, 0), nh.get(op, 0)
            rows.add(f"{prefix}:{op}", o, n, change=f"{n - o:+d}")


def _same_backend(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return _get(old, "backend", "name") == _get(new, "backend", "name")


def _size(manifest: Mapping[str, Any]) -> int | None:
    artifacts = manifest.get("artifacts")
    return None if artifacts is None else sum(a.get("bytes", 0) for a in artifacts)


def _compare_manifests(rows: _Rows, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    osrc, nsrc = _get(old, "source", "sha256"), _get(new, "source", "sha256")
    if osrc and nsrc and osrc != nsrc:  # (a gate comparing the wrong folders passed without a word)
        rows.add("model", f"{_get(old, 'source', 'name')} {osrc[:12]}", f"{_get(new, 'source', 'name')} {nsrc[:12]}",
                 note="different model files (source sha256)")
    elif (oext := _get(old, "source", "external_data") or {}) != (next_ := _get(new, "source", "external_data") or {}):
        # the same .onnx over other weights files (a fine-tune saved with external data)
        changed = sorted(k for k in {*oext, *next_} if oext.get(k) != next_.get(k))
        rows.add("model", f"{changed[0]} {(oext.get(changed[0]) or 'none')[:12]}",
                 f"{changed[0]} {(next_.get(changed[0]) or 'none')[:12]}",
                 note=f"different weights: external data {', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''} "
                      "(sha256), the .onnx file the same")
    elif (on := _get(old, "source", "name")) != (nn := _get(new, "source", "name")):
        rows.add("model", on, nn, note="the same model bytes under another file name")
    _compare_data(rows, old, new)
    _compare_io(rows, old, new)
    ot, nt = _get(old, "target", "name"), _get(new, "target", "name")
    rows.add("target", ot, nt, note="different devices: budgets and estimates differ" if ot != nt else "")
    if ot == nt:
        _compare_profiles(rows, _get(old, "target", "profile") or {}, _get(new, "target", "profile") or {})
    ob, nb = _get(old, "backend", "name"), _get(new, "backend", "name")
    rows.add("backend", ob, nb, note="per-layer records not compared across backends" if ob != nb else "")
    _outputs(rows, _get(old, "validation", "outputs", default={}) or {},
             _get(new, "validation", "outputs", default={}) or {})
    _compare_budgets(rows, old, new)
    _compare_latency(rows, _latency(old), _latency(new))
    os_, ns = _size(old), _size(new)
    rows.add("size", os_, ns, fmt=_fmt_bytes, change=_relative(os_, ns), gate="size", note="artifacts")
    om, nm = _get(old, "measured", "peak_memory_mb"), _get(new, "measured", "peak_memory_mb")
    simulated = any(_get(m, "backend", "runtime", "functional_reference") for m in (old, new))
    # (a TensorRT bundle's peak memory, measured without a GPU, is ONNX Runtime's on this CPU:
    # a change in how deploycomp simulates it had failed a memory gate at +179%)
    rows.add("peak_memory", om, nm, fmt=_fmt_mb, change=_relative(om, nm), gate=None if simulated else "memory",
             note="of this machine's functional run of the bundle, not the device's: not gated" if simulated else "")
    om, nm = (_get(m, "measured", "peak_memory_at_profile_max", "mb") for m in (old, new))
    if om is not None or nm is not None:  # (a --profile's MAX: held to the memory budget too)
        rows.add("peak_memory_at_profile_max", om, nm, fmt=_fmt_mb, change=_relative(om, nm), gate="memory")
    _compare_precision(rows, old, new)
    _compare_ops(rows, old, new)


def _takes(manifest: Mapping[str, Any]) -> dict[str, tuple[list, list]]:
    """Each input's shapes, MIN and MAX: its ``--profile``'s, or its one shape twice."""
    profiles = _get(manifest, "io", "profiles") or {}
    return {i["name"]: ((profiles[i["name"]]["min"], profiles[i["name"]]["max"]) if i["name"] in profiles
                        else (i.get("shape"), i.get("shape"))) for i in _get(manifest, "io", "inputs") or []}


def _fmt_takes(ends: tuple[list, list] | None) -> str:
    if ends is None:
        return "-"
    lo, hi = ("x".join(map(str, e)) if e is not None else "?" for e in ends)
    return lo if lo == hi else f"{lo} to {hi}"


def _compare_io(rows: _Rows, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """A row per input whose shapes differ: a regression where the new bundle no longer
    takes every shape the old one did (an application feeding text lines of their own
    widths breaks when a range becomes one shape; ``diff`` had said "no regressions")."""
    ot, nt = _takes(old), _takes(new)
    for name in sorted(set(ot) & set(nt)):
        o, n = ot[name], nt[name]
        if o == n:
            continue
        (olo, ohi), (nlo, nhi) = o, n
        covered = (None not in (olo, ohi, nlo, nhi) and len(olo) == len(nlo)
                   and all(a <= b for a, b in zip(nlo, olo)) and all(a >= b for a, b in zip(nhi, ohi)))
        rows.add(f"input:{name}", o, n, fmt=_fmt_takes,
                 regression=None if covered else "takes fewer shapes than before: inputs the old bundle ran are refused",
                 note="the shapes the bundle takes")


def _compare_data(rows: _Rows, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """Rows where the calibration or validation samples differ (their sha256): one pixel
    of calibration can move 27 layers to float, and the layer rows alone do not say why."""
    for metric, path, label in (("calibration_data", ("quantization", "calibration_sha256"),
                                 ("quantization", "calibration_data")),
                                ("validation_data", ("validation", "data", "sha256"), ("validation", "data", "label"))):
        o, n = _get(old, *path), _get(new, *path)
        if o and n and o != n:
            rows.add(metric, f"{_get(old, *label)} {o[:12]}", f"{_get(new, *label)} {n[:12]}",
                     note="different samples (sha256)")


def _flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _compare_profiles(rows: _Rows, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """A row per field of the same-named target profile that differs (an edited bandwidth
    doubles the latency estimate; an edited fidelity budget changes every verdict)."""
    from deploycomp.targets import LOADER_FIELDS

    of, nf = _flat(old), _flat(new)
    for key in sorted(set(of) | set(nf)):
        # (an empty list where an older bundle's profile has no such field is no edit: a field
        # added since, e.g. ``extended_from``, would otherwise be a row on every such pair; a
        # field only one side's deploycomp records is said so; the loader's are no profile's)
        if key == "description" or key.split(".")[0] in LOADER_FIELDS or (of.get(key) in (None, [])
                                                                          and nf.get(key) in (None, [])):
            continue
        one_side = (key in of) != (key in nf)
        rows.add(f"profile:{key}", of.get(key), nf.get(key), comparable=not one_side,
                 note="recorded by one side's deploycomp only (a field added since)" if one_side
                 else "the target profile differs")


# ---------------------------------------------------------------------------- entry points

def _resolve(path: str | os.PathLike) -> tuple[str, Path]:
    """("bundle", folder) or ("index", index.json path); anything else is a one-line error."""
    p = Path(path)
    if p.is_dir():
        if (p / MANIFEST).is_file():
            return "bundle", p
        if (p / INDEX).is_file():
            return "index", p / INDEX
        raise DeployError(f"{p}: neither a bundle ({MANIFEST}) nor a fleet folder ({INDEX})")
    if p.is_file():
        if p.name == MANIFEST:
            return "bundle", p.parent
        return "index", p
    raise DeployError(f"{p}: no such bundle or fleet index")


def _read_index(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DeployError(f"{path}: not a readable fleet index ({str(e).splitlines()[0]})") from e
    entries = data.get("entries") if isinstance(data, Mapping) else None
    if not isinstance(entries, list):
        raise DeployError(f"{path}: not a fleet index (no \"entries\" list)")
    for i, e in enumerate(entries):
        missing = [k for k in ("model", "target", "precision") if not isinstance(e, Mapping) or k not in e]
        if missing:
            raise DeployError(f"{path}: entry {i} has no {', '.join(missing)}")
    return entries


def diff(old: str | os.PathLike, new: str | os.PathLike,
         max_regression: str | Iterable[str] | Mapping[str, Limit] | None = None) -> Diff:
    """Compare two bundles or two fleet indexes, whichever OLD and NEW are (a folder
    with ``manifest.json`` is a bundle; a folder with ``index.json``, or a JSON file,
    is a fleet index). Comparing a bundle with an index is refused."""
    (okind, _), (nkind, _) = _resolve(old), _resolve(new)
    if okind != nkind:
        raise DeployError(f"cannot diff a {okind} ({old}) against a {'fleet index' if nkind == 'index' else nkind} "
                          f"({new}); give two bundles or two fleet indexes")
    return (diff_bundles if okind == "bundle" else diff_indexes)(old, new, max_regression)


def _checked(bundle: str | os.PathLike) -> dict[str, Any]:
    """A bundle's manifest, its artifacts checked against it first (exit 11 naming the first
    that differs, as ``run`` and ``verify`` say): a bundle with one byte of its weights
    changed had been called "byte-identical" to the original, exit 0."""
    from deploycomp.signing import check_digests

    manifest = read_manifest(bundle)
    check_digests(bundle, manifest)
    return manifest


def diff_bundles(old: str | os.PathLike, new: str | os.PathLike,
                 max_regression: str | Iterable[str] | Mapping[str, Limit] | None = None) -> Diff:
    """What changed from bundle OLD to bundle NEW, judged against ``max_regression``."""
    limits = parse_thresholds(max_regression)
    result = Diff(str(old), str(new), "bundles", limits)
    rows = _Rows(limits)
    om, nm = _checked(old), _checked(new)
    _compare_manifests(rows, om, nm)
    result.rows = rows.rows
    result.same_artifacts = _artifact_digests(om) is not None and _artifact_digests(om) == _artifact_digests(nm)
    same_run = all(_get(om, "backend", "runtime", k) == _get(nm, "backend", "runtime", k)
                   for k in ("executed_precision", "compile_config"))
    if (result.same_artifacts and same_run and om.get("versions") == nm.get("versions")
            and "deploycomp-code" in (om.get("versions") or {}) and om.get("host") == nm.get("host")):
        # the same files on the same runtimes and machine: a timing or memory difference is the
        # measurement's, not the bundle's (a gate on two byte-identical bundles had failed on
        # peak memory +604%, a fleet worker having loaded the runtime before)
        for r in result.rows:
            if r.metric in ("latency", "peak_memory", "peak_memory_at_profile_max") and r.regression:
                r.regression = None
                r.note = "the same artifacts, runtime versions and machine: measurement noise, not gated"
    return result


def _artifact_digests(manifest: Mapping[str, Any]) -> dict[str, str] | None:
    artifacts = manifest.get("artifacts")
    return {a["path"]: a.get("sha256") for a in artifacts} if artifacts else None


def _entry_key(e: Mapping[str, Any]) -> tuple[str, str, str]:
    return str(e["model"]), str(e["target"]), str(e["precision"])


def _entry_state(e: Mapping[str, Any] | None) -> str | None:
    """The entry's outcome: ``ok``, ``budgets missed`` (built, with ``--no-fail``'s
    verdict) or ``failed (exit N): why``; None for no entry."""
    if e is None:
        return None
    if e.get("ok_built") and e.get("ok") is False:  # (a fleet records a missed budget as its error, exit 8)
        why = str(e.get("error") or "").splitlines()[0] if e.get("error") else ""
        return "budgets missed" + (f": {why}" if why else "")
    if e.get("error") or e.get("exit_code"):
        return f"failed (exit {e.get('exit_code', '?')}): {str(e.get('error') or 'no error recorded').splitlines()[0]}"
    return "budgets missed" if e.get("ok") is False else "ok"


def _failed(e: Mapping[str, Any]) -> bool:
    return _entry_state(e) != "ok"


def _what_failed(e: Mapping[str, Any]) -> str:
    """The verdict's words; the entry's own error is in its ``new`` column already."""
    return "misses its budgets" if (_entry_state(e) or "").startswith("budgets missed") else "fails to build"


def _bundle_of(index: Path, e: Mapping[str, Any]) -> Path | None:
    rel = e.get("bundle")
    if not rel:
        return None
    path = (index.parent / rel)
    return path if (path / MANIFEST).is_file() else None


def diff_indexes(old: str | os.PathLike, new: str | os.PathLike,
                 max_regression: str | Iterable[str] | Mapping[str, Limit] | None = None) -> Diff:
    """Two fleets, entry by entry, matched on (model, target, precision).

    Added and removed entries are listed; an entry NEW failed to build (or whose
    budgets NEW missed) is a regression. Where both entries' bundles are on disk they
    are diffed in full (skipped when the manifests' sha256 are equal: a cached rebuild
    is byte-identical); otherwise the index's own numbers are compared (minimum cosine,
    latency of the same kind, size)."""
    limits = parse_thresholds(max_regression)
    (_, opath), (_, npath) = _resolve(old), _resolve(new)
    result = Diff(str(old), str(new), "indexes", limits)
    olds = {_entry_key(e): e for e in _read_index(opath)}
    news = {_entry_key(e): e for e in _read_index(npath)}
    for key in sorted(set(olds) | set(news)):
        o, n = olds.get(key), news.get(key)
        rows = _Rows(limits, "/".join(key))
        ostate, nstate = _entry_state(o), _entry_state(n)
        if o is None or n is None:
            failed = n is not None and _failed(n)
            rows.add("entry", ostate, nstate, change="added" if o is None else "removed",
                     regression=f"added, {_what_failed(n)}" if failed else None)
            result.rows += rows.rows
            continue
        if _failed(n):
            rows.add("build", ostate, nstate, regression=f"{'still ' if _failed(o) else ''}{_what_failed(n)}")
        elif _failed(o):
            rows.add("build", ostate, nstate, note="fixed")
        ob, nb = _bundle_of(opath, o), _bundle_of(npath, n)
        if o.get("manifest_sha256") and o.get("manifest_sha256") == n.get("manifest_sha256") and not _failed(n):
            pass  # the same bundle (a cached rebuild): nothing else can differ
        elif ob is not None and nb is not None:
            om, nm = _checked(ob), _checked(nb)
            _compare_manifests(rows, om, nm)
            for side, e, b in (("old", o, ob), ("new", n, nb)):  # replaced after the index was written?
                on_disk = sha256_file(b / MANIFEST)
                if e.get("manifest_sha256") and e["manifest_sha256"] != on_disk:
                    rows.add(f"{side}_bundle", e["manifest_sha256"][:12], on_disk[:12], comparable=False,
                             note=f"{b} is not the bundle the index recorded (manifest sha256)")
        elif not _failed(o) and not _failed(n):
            _compare_entries(rows, o, n)
        result.rows += rows.rows
    return result


def _compare_entries(rows: _Rows, o: Mapping[str, Any], n: Mapping[str, Any]) -> None:
    """The index's summary numbers, for entries whose bundles are not both on this
    machine (a CI job may keep main's index.json but not its bundles)."""
    note = "index numbers (bundle not here)"
    rows.add("cosine[min]", o.get("fidelity"), n.get("fidelity"), fmt=_fmt_cos,
             change=_delta(o.get("fidelity"), n.get("fidelity"), "+.1e"), gate="cosine", lower_is_worse=True, note=note)
    _compare_latency(rows, *(_Timing(e.get("latency_ms"), _latency_kind(e.get("latency_kind", "")), e.get("latency_busy"))
                             for e in (o, n)))
    os_, ns = o.get("size_mb"), n.get("size_mb")
    os_, ns = (None if v is None else v * 1e6 for v in (os_, ns))
    rows.add("size", os_, ns, fmt=_fmt_bytes, change=_relative(os_, ns), gate="size", note=note)


