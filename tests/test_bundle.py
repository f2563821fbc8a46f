"""The bundle's JSON is strict JSON: a fleet tool's parser reads every manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest

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


def test_folders_of_a_killed_process_on_this_host_are_removed_and_no_others(tmp_path):
    """What a killed build or fleet run left next to ``out`` (staging, swap, fleet copy):
    removed where its process is gone; a live process's, and another host's (``out`` on a
    file system a fleet shares), stay."""
    import socket
    import subprocess
    import sys

    from deploycomp.bundle import remove_abandoned

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = socket.gethostname()
        names = {f".out.{kind}-{who}": (kind, who) for kind in ("staging", "old", "fleet")
                 for who in (f"{host}-{gone.pid}", f"{host}-{live.pid}", f"elsewhere-{gone.pid}")}
        for name in names:
            (tmp_path / name).mkdir()
        remove_abandoned(tmp_path / "out")
        left = {p.name for p in tmp_path.iterdir()}
        assert left == {n for n, (_, who) in names.items() if who != f"{host}-{gone.pid}"}
    finally:
        live.kill()


def _dead_pid() -> int:
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


def test_a_file_is_replaced_whole_and_an_error_leaves_the_old_one(tmp_path):
    import pytest

    from deploycomp.bundle import replaced_file

    target = tmp_path / "index.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with replaced_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["index.json"]
    with replaced_file(target, ".npz") as tmp:
        assert tmp.name.endswith(".npz") and tmp.parent == tmp_path
        tmp.write_text("new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["index.json"]


def test_temporary_files_of_a_killed_process_go_with_the_next_write(tmp_path):
    """A process killed while writing a file (a signature, a fleet index, an optimized
    model) leaves its temporary file; inside a bundle, verification would then find an
    extra file. The next write of the same file removes it; a live process's stays."""
    import os
    import socket

    from deploycomp.bundle import replaced_file

    host = socket.gethostname()
    killed = tmp_path / f".signature.json.tmp-{host}-{_dead_pid()}"
    killed_npz = tmp_path / f".signature.json.tmp-{host}-{_dead_pid()}.npz"
    alive = tmp_path / f".signature.json.tmp-{host}-{os.getppid()}"
    for left in (killed, killed_npz, alive):
        left.write_text("half")
    with replaced_file(tmp_path / "signature.json") as tmp:
        tmp.write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, "signature.json"])


def test_a_damaged_manifest_is_refused_in_one_line_by_run_and_load(tiny_conv, tmp_path):
    """A manifest written over, or missing a part that running reads: one line and exit 11
    (as `verify` says: not JSON, not an object, no format included), not a KeyError; one
    without its artifacts list is refused too (it had skipped every checksum), and run
    will not write its outputs into a bundle."""
    import shutil
    import subprocess
    import sys

    import pytest

    import deploycomp
    from deploycomp.errors import VerificationError

    deploycomp.build(tiny_conv, tmp_path / "b")
    np.savez(tmp_path / "x.npz", x=np.zeros((1, 3, 16, 16), np.float32))
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    damaged = {"no_io": {k: v for k, v in manifest.items() if k != "io"},
               "no_artifacts": {k: v for k, v in manifest.items() if k != "artifacts"},
               "bad_dtype": manifest | {"io": manifest["io"] | {
                   "inputs": [manifest["io"]["inputs"][0] | {"dtype": "float99"}]}},
               "backend_str": manifest | {"backend": "openvino"}}
    for name, content in damaged.items():
        shutil.copytree(tmp_path / "b", tmp_path / name)
        (tmp_path / name / "manifest.json").write_text(json.dumps(content))
        proc = subprocess.run([sys.executable, "-m", "deploycomp.cli", "run", tmp_path / name, "--inputs",
                               tmp_path / "x.npz"], capture_output=True, text=True)
        assert proc.returncode == 11 and proc.stderr.count("\n") == 1 and "damaged manifest" in proc.stderr, name
    shutil.copytree(tmp_path / "b", tmp_path / "binary")
    (tmp_path / "binary" / "manifest.json").write_bytes(b"PK\x03\x04\xb9\x00")
    with pytest.raises(VerificationError, match="corrupt manifest"):
        deploycomp.load(tmp_path / "binary")
    shutil.copytree(tmp_path / "b", tmp_path / "no_format")
    (tmp_path / "no_format" / "manifest.json").write_text('{"x": 1}')
    for command in (["run", tmp_path / "no_format", "--inputs", tmp_path / "x.npz"],
                    ["diff", tmp_path / "no_format", tmp_path / "b"], ["verify", tmp_path / "no_format"]):
        proc = subprocess.run([sys.executable, "-m", "deploycomp.cli", *command], capture_output=True, text=True)
        assert proc.returncode == 11 and "unsupported bundle format None" in proc.stderr, command  # (run, diff: 2)
    proc = subprocess.run([sys.executable, "-m", "deploycomp.cli", "run", tmp_path / "b", "--inputs",
                           tmp_path / "x.npz", "--outputs", tmp_path / "b" / "manifest.json"], capture_output=True, text=True)
    assert proc.returncode == 2 and "inside the bundle" in proc.stderr
    assert json.loads((tmp_path / "b" / "manifest.json").read_text()) == manifest



@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"format": ' + "9" * 5000 + "}"],
                         ids=["nested 100000 deep", "a 5000-digit number"])
def test_a_manifest_python_cannot_parse_fails_verification(tmp_path, text):
    """A manifest nested 100000 deep (RecursionError) or holding a 5000-digit number (past
    Python's digit limit) had been an internal error in run, inspect and diff."""
    from deploycomp.bundle import read_manifest
    from deploycomp.errors import VerificationError
    from deploycomp.signing import verify_bundle

    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "manifest.json").write_text(text)
    with pytest.raises(VerificationError, match="corrupt manifest"):
        read_manifest(tmp_path / "b")
    with pytest.raises(VerificationError, match="corrupt manifest"):
        verify_bundle(tmp_path / "b")
