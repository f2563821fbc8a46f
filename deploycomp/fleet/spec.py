"""A fleet spec: every model, for every device class, at every precision, in one file.

::

    models:
      - name: yolov8n
        path: models/yolov8n.onnx          # relative to the spec file
        inputs: {images: [1, 3, 320, 320]}
        calibration: data/yolo-calib.npz   # optional; needed for int8/auto
        validation: data/yolo-val.npz      # optional
        preprocess: {scale: 0.0039}        # optional, as --preprocess
        freeze: {sr: 16000}                # optional, as --freeze
        targets: [host, jetson]            # optional: overrides the fleet's
        precisions: [fp16]                 # optional: overrides the fleet's
        budgets: {min_cosine: 0.99}        # optional: min_cosine, min_top1, min_box_iou, min_mask_iou, min_text_similarity
        options: {int8_range: minmax}      # optional: keep_float, int8_range, int8_boosters, int8_time_limit,
                                           # judge_where, judge_boxes, judge_masks, judge_ctc (lists of rules),
                                           # feedback ({stateN: state}), ...
      - name: yolov8n-640
        extends: yolov8n                   # every key of yolov8n, these replacing its own
        inputs: {images: [1, 3, 640, 640]}
    targets: [host, android-arm64, jetson-orin-nano]
    precisions: [fp16, int8]               # or [auto]
    budgets: {}                            # defaults for every model
    options: {}

``extends`` merges like target profiles' (mappings key by key, lists and scalars
replaced). Unknown keys, a missing file, an unknown target or precision, or an
``extends`` cycle are one-line errors naming the key (``models[1].inputs``), before any
build starts. :func:`load_spec` returns the :class:`Job` list: one per (model, target,
precision), each carrying everything its build (and its cache key) depends on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from deploycomp.errors import DeployError, InputDataError
from deploycomp.paths import DEVICE_OR_PIPE, device_or_pipe
from deploycomp.targets import is_profile_path, merge_mappings

__all__ = ["FleetSpec", "Job", "SpecError", "load_spec"]

Precision = Literal["fp32", "fp16", "bf16", "int8", "auto"]


class SpecError(InputDataError):
    """The fleet spec is unreadable or wrong (exit 4, like other bad input)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _distinct(values: list | None) -> list | None:
    """A list of targets or precisions names each once: a cell is a model, a target and a
    precision (``targets: [host, host]`` built one cell twice into one place, and the run
    failed on it with an internal error that also broke the cache entry)."""
    if values is not None:
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise ValueError(f"lists {', '.join(map(repr, twice))} twice")
    return values


def _parse_where():
    from deploycomp.validate import parse_where

    return parse_where


def _parse_boxes():
    from deploycomp.boxes import parse_boxes

    return parse_boxes


def _parse_masks():
    from deploycomp.masks import parse_masks

    return parse_masks


def _parse_ctc():
    from deploycomp.ctc import parse_ctc

    return parse_ctc


def _parse_profiles():
    from deploycomp.errors import DeployError
    from deploycomp.shapes import parse_profile_spec

    def parse(values: list[str]) -> list:
        try:
            return [parse_profile_spec(v) for v in values]
        except DeployError as e:  # (said under the key, as the rules' own errors are)
            raise ValueError(str(e)) from None

    return parse


RULE_PARSERS = {"judge_where": _parse_where, "judge_boxes": _parse_boxes, "judge_masks": _parse_masks,
                "judge_ctc": _parse_ctc, "profiles": _parse_profiles}
"""A spec's options that are lists of the command line's strings (rules, profiles)
-> (imported when needed) the parser that reads them, for the spec's check and the build
alike."""


class Budgets(_Strict):
    min_cosine: float | None = Field(default=None, gt=0, le=1)
    min_top1: float | None = Field(default=None, gt=0, le=1)
    min_box_iou: float | None = Field(default=None, gt=0, le=1)
    min_mask_iou: float | None = Field(default=None, gt=0, le=1)
    min_text_similarity: float | None = Field(default=None, gt=0, le=1)


class Options(_Strict):
    """Build options a model may set (the ``deploycomp build`` flags of the same names)."""

    keep_float: list[str] = Field(default_factory=list)
    int8_range: Literal["auto", "percentile", "minmax", "mean_minmax", "mse", "entropy"] | None = None
    int8_boosters: list[str] | None = None
    int8_time_limit: float | None = Field(default=None, ge=0)
    io_layout: Literal["nhwc", "nchw"] | None = None
    int8_io: bool | None = None
    keep_initializer_inputs: bool = False
    judge_channels: bool = False
    judge_where: list[str] = Field(default_factory=list)
    judge_boxes: list[str] = Field(default_factory=list)
    judge_masks: list[str] = Field(default_factory=list)
    judge_ctc: list[str] = Field(default_factory=list)
    profiles: list[str] = Field(default_factory=list)
    """Input shape ranges (TensorRT optimization profiles, OpenVINO bounded dims),
    ``NAME:MIN:OPT:MAX`` as ``--profile`` takes them."""
    validation_samples: int | None = Field(default=None, ge=0)
    """Validation samples run at most, as ``--validation-samples`` (0: every one; unset: the
    build's default)."""
    feedback: dict[str, str] = Field(default_factory=dict)
    """Outputs fed back as inputs, ``{stateN: state}`` as ``--feedback stateN=state``: the
    validation samples judged as one stream."""

    @field_validator("judge_where", "judge_boxes", "judge_masks", "judge_ctc", "profiles")
    @classmethod
    def _rules_read(cls, values: list[str], info) -> list[str]:
        """Each rule checked as the build will read it (a bad one had failed every cell of its
        model, one build at a time)."""
        RULE_PARSERS[info.field_name]()(values)
        return values


class ModelSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    path: str
    inputs: dict[str, list[int]] = Field(default_factory=dict)
    calibration: str | None = None
    validation: str | None = None
    preprocess: str | dict[str, Any] | None = None
    freeze: dict[str, float | list[float]] = Field(default_factory=dict)
    targets: list[str] | None = None
    precisions: list[Precision] | None = None

    _distinct_lists = field_validator("targets", "precisions")(_distinct)
    budgets: Budgets = Budgets()
    options: Options = Options()


class FleetSpec(_Strict):
    models: list[ModelSpec] = Field(min_length=1)
    targets: list[str] = Field(min_length=1)
    precisions: list[Precision] = Field(min_length=1)
    budgets: Budgets = Budgets()
    options: Options = Options()

    _distinct_lists = field_validator("targets", "precisions")(_distinct)


BACKEND_OPTIONS = {"io_layout": (("tflite",), None), "int8_io": (("tflite",), "int8"),
                   "profiles": (("tensorrt", "openvino"), None)}
"""Model options only some backends' targets have: those backends, and the precision each
needs (None: any)."""

INT8_OPTIONS = ("keep_float", "int8_range", "int8_boosters", "int8_time_limit")
"""Options only an int8 search reads (an ``int8`` or ``auto`` cell): a float cell's build
is the same whatever they say, so they are not part of its cache key."""


def cell_options(options: dict[str, Any], backend: str, precision: str) -> dict[str, Any]:
    """The model's options that apply to one cell: an option only TFLite has (its I/O
    layout, full-integer I/O) or only runtimes of dynamic shapes (profiles: TensorRT,
    OpenVINO) is left out of the other targets' builds, and full-integer I/O out of a
    TFLite build that is not int8, as the int8 options are simply unused by a float build;
    a build given one would refuse it (exit 6), and every other cell of the model with it.
    The index says which were left out (``options_not_applied``)."""
    return {k: v for k, v in options.items()
            if k not in BACKEND_OPTIONS
            or (backend in BACKEND_OPTIONS[k][0] and BACKEND_OPTIONS[k][1] in (None, precision))}


@dataclass(frozen=True)
class Job:
    """One build of the fleet: what ``deploycomp build`` is given, with absolute paths."""

    model: str
    """The model entry's name (the bundle goes to ``OUT/<model>/<target>-<precision>``)."""
    path: Path
    target: str
    precision: str
    inputs: tuple[tuple[str, tuple[int, ...]], ...] = ()
    calibration: Path | None = None
    validation: Path | None = None
    preprocess: Any = None
    freeze: tuple[tuple[str, Any], ...] = ()
    min_cosine: float | None = None
    min_top1: float | None = None
    min_box_iou: float | None = None
    min_mask_iou: float | None = None
    min_text_similarity: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    not_applied: tuple[str, ...] = ()
    """The model's options that do not apply to this cell (:func:`cell_options`)."""

    @property
    def target_name(self) -> str:
        """The target as the index and folders name it: a profile file by its stem."""
        return Path(self.target).stem if is_profile_path(self.target) else self.target

    @property
    def label(self) -> str:
        return f"{self.model}/{self.target_name}-{self.precision}"

    @property
    def folder(self) -> str:
        return self.label


def _resolve_extends(models: list[Any], where: str) -> list[dict]:
    """Each entry with its ``extends`` chain merged in (entries are dicts, checked later)."""
    if not isinstance(models, list):
        raise SpecError(f"{where}: 'models' must be a list of model entries")
    by_name = {m.get("name"): m for m in models if isinstance(m, dict)}
    resolved = []
    for i, entry in enumerate(models):
        if not isinstance(entry, dict):
            raise SpecError(f"{where}: models[{i}]: a model entry is a mapping (name, path, inputs, ...)")
        chain, seen = entry, [entry.get("name")]
        merged = {k: v for k, v in entry.items() if k != "extends"}
        while "extends" in chain:
            parent = chain["extends"]
            if parent in seen:
                raise SpecError(f"{where}: models[{i}].extends: cycle through {' -> '.join(map(str, seen + [parent]))}")
            if parent not in by_name:
                raise SpecError(f"{where}: models[{i}].extends: no model named {parent!r} in the spec")
            seen.append(parent)
            chain = by_name[parent]
            merged = merge_mappings({k: v for k, v in chain.items() if k not in ("extends", "name")}, merged)
        resolved.append(merged)
    return resolved


def _key_path(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<spec>"


def load_spec(path: str | os.PathLike) -> tuple[FleetSpec, list[Job]]:
    """The spec and its jobs, every path resolved against the spec file's folder."""
    from deploycomp.targets import PRECISIONS, check_op_names, load_target
    from deploycomp.yamlfile import read_mapping

    path = Path(path)
    data = read_mapping(path, SpecError, "fleet spec", "a mapping with models, targets and precisions")
    if "models" in data:
        data = {**data, "models": _resolve_extends(data["models"], str(path))}
    try:
        spec = FleetSpec.model_validate(data)
    except ValidationError as e:
        # an unknown key first: `precision:` for `precisions:` had said "precisions: Field
        # required", which sends a user looking for what is there
        err = min(e.errors(), key=lambda x: x["type"] != "extra_forbidden")
        key = _key_path(err["loc"])
        if err["type"] == "extra_forbidden":
            raise SpecError(f"{path}: {key}: unknown key") from None
        raise SpecError(f"{path}: {key}: {err['msg'].removeprefix('Value error, ')}") from None
    names = [m.name.lower() for m in spec.models]  # (TF and tf: one folder where case is not told apart)
    dupes = sorted({m.name for m in spec.models if names.count(m.name.lower()) > 1})
    if dupes:
        raise SpecError(f"{path}: models: the name {dupes[0]!r} is used twice, ignoring case (bundles go to "
                        "OUT/<name>/, one folder on a file system that does not tell case apart)")
    base = path.parent.resolve()

    def local(value: str | None, key: str, must_exist: bool = True) -> Path | None:
        if value is None:
            return None
        p = (base / value).resolve()
        if must_exist and not p.exists():
            raise SpecError(f"{path}: {key}: {value} not found (relative to {base})")
        if device_or_pipe(p):
            raise SpecError(f"{path}: {key}: {value} is {DEVICE_OR_PIPE}")
        return p

    jobs: list[Job] = []
    checked_targets: set[str] = set()
    for i, m in enumerate(spec.models):
        where = f"models[{i}]"
        model_path = local(m.path, f"{where}.path")
        if model_path.is_dir():  # (an internal error while keying the builds: IsADirectoryError)
            raise SpecError(f"{path}: {where}.path: {m.path} is a folder; name the .onnx file")
        targets = m.targets or spec.targets
        precisions = m.precisions or spec.precisions
        key = f"{where}.targets" if m.targets else "targets"  # (the fleet's list had been named as the model's)
        for t in targets:
            if t in checked_targets:
                continue
            try:  # (a SpecError of local() already names the file and the key)
                check_op_names(load_target(local(t, key) if is_profile_path(t) else t))
            except SpecError:
                raise
            except DeployError as e:
                raise SpecError(f"{path}: {key}: {e}") from None
            checked_targets.add(t)
        budgets = merge_mappings(spec.budgets.model_dump(exclude_none=True), m.budgets.model_dump(exclude_none=True))
        options = merge_mappings(spec.options.model_dump(exclude_defaults=True), m.options.model_dump(exclude_defaults=True))
        preprocess = m.preprocess
        if isinstance(preprocess, str) and ((base / preprocess).is_file() or preprocess.endswith((".yaml", ".yml"))):
            preprocess = str(local(preprocess, f"{where}.preprocess"))
        if preprocess is not None:  # (a bad spec had failed every cell of the model, and was cached so)
            from deploycomp.preprocess import load_spec as load_preprocess

            try:
                load_preprocess(preprocess)
            except DeployError as e:
                raise SpecError(f"{path}: {where}.preprocess: {e}") from None
        for t in targets:
            target = str(local(t, key)) if is_profile_path(t) else t
            backend = load_target(target).backend
            for p in precisions:
                if p not in (*PRECISIONS, "auto"):
                    raise SpecError(f"{path}: {where}.precisions: unknown precision {p!r}")
                applied = cell_options(options, backend, p)
                # a profiled input's range serves the cells of dynamic shapes, its `inputs` shape
                # the others (TFLite's): both had gone to every cell, and each build given both
                # for one input refused it
                ranged = {spec[0] for spec in RULE_PARSERS["profiles"]()(applied.get("profiles", []))}
                jobs.append(Job(
                    model=m.name, path=model_path, target=target, precision=p,
                    inputs=tuple((k, tuple(v)) for k, v in m.inputs.items() if k not in ranged),
                    calibration=local(m.calibration, f"{where}.calibration"),
                    validation=local(m.validation, f"{where}.validation"),
                    preprocess=preprocess, freeze=tuple(sorted(m.freeze.items())),
                    min_cosine=budgets.get("min_cosine"), min_top1=budgets.get("min_top1"),
                    min_box_iou=budgets.get("min_box_iou"), min_mask_iou=budgets.get("min_mask_iou"),
                    min_text_similarity=budgets.get("min_text_similarity"), options=applied,
                    not_applied=tuple(sorted(set(options) - set(applied))),
                ))
    seen: dict[str, Job] = {}
    for job in jobs:  # (two profiles named alike built into one folder: an internal error, a KeyError)
        if job.folder in seen and seen[job.folder].target != job.target:
            raise SpecError(f"{path}: targets {seen[job.folder].target} and {job.target} would both build into "
                            f"{job.model}/{job.target_name}-{job.precision}; give the profile files other names")
        seen[job.folder] = job
    return spec, jobs
