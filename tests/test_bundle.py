"""The bundle's JSON is strict JSON: a fleet tool's parser reads every manifest."""

from __future__ import annotations

import json

import numpy as np

from deploycomp.bundle import json_text, write_json


def _strict(text: str):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_nan_and_inf_are_written_as_null_and_numpy_scalars_as_numbers(tmp_path):
    """An fp16 search's error on an output it turned to NaN was written as a bare NaN,
    which strict readers (JavaScript's JSON.parse, jq) refuse."""
    data = {"nmse": {"pitch": float("nan"), "confidence": float("inf")}, "gain": [np.float32(0.5), -float("inf")],
            "count": np.int64(3), "ok": True, "name": "x"}
    write_json(tmp_path / "m.json", data)
    back = _strict((tmp_path / "m.json").read_text())
    assert back == {"nmse": {"pitch": None, "confidence": None}, "gain": [0.5, None], "count": 3, "ok": True,
                    "name": "x"}
    assert _strict(json_text({"a": np.float64(1.25)})) == {"a": 1.25}
