"""``deploycomp fleet``: one spec, every build, cached by content, indexed, signed.

Specifications from the point of view of a CI job that rebuilds a fleet on every commit:
what it writes, what a rerun reuses, what a change rebuilds, how a failure is recorded,
and that a spec error stops it before any build.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from deploycomp.errors import InputDataError, OutputExistsError
from deploycomp.fleet import FLEET_NOT_HELD, run_fleet
from deploycomp.fleet.cache import BuildCache
from deploycomp.fleet.spec import load_spec
from tests.test_cli import cli


def _tiny(path: Path, channels: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "w2"], ["logits"], transB=1, name="fc"),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=-1, name="softmax")]
    inits = [numpy_helper.from_array(rng.standard_normal((channels, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal((4, channels)).astype(np.float32), "w2")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", 1, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("probs", 1, ["N", 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


SPEC = """
models:
  - name: a
    path: models/a.onnx
    inputs: {x: [1, 3, 16, 16]}
    calibration: data/calib.npz
  - name: b
    extends: a
    path: models/b.onnx
targets: [host, android-arm64, jetson-orin-nano]
precisions: [fp16]
"""


@pytest.fixture
def fleet_dir(tmp_path) -> Path:
    (tmp_path / "models").mkdir()
    (tmp_path / "data").mkdir()
    _tiny(tmp_path / "models" / "a.onnx", 8, 0)
    _tiny(tmp_path / "models" / "b.onnx", 16, 1)
    np.savez(tmp_path / "data" / "calib.npz", x=np.random.default_rng(0).random((8, 3, 16, 16), dtype=np.float32))
    (tmp_path / "fleet.yaml").write_text(SPEC)
    return tmp_path


def _bytes(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in ("index.json", "fleet.html")}


def test_a_spec_builds_every_bundle_and_a_rerun_reuses_them_byte_for_byte(fleet_dir):
    cache = fleet_dir / "cache"
    first = run_fleet(fleet_dir / "fleet.yaml", fleet_dir / "out", cache_dir=cache, jobs=2)
    assert first.ok and first.exit_code == 0
    entries = first.index["entries"]
    assert sorted(e["bundle"] for e in entries) == sorted(f"{m}/{t}-fp16" for m in "ab"
                                                          for t in ("host", "android-arm64", "jetson-orin-nano"))
    assert all(e["manifest_sha256"] and e["fidelity"] > 0.999 and not e["cached"] for e in entries)
    assert {e["latency_kind"] for e in entries} == {"measured", "roofline estimate"}
    # how busy the machine was while a host cell was timed (jobs=2: beside the other worker), as
    # its manifest says (none where the runs spanned too little time to read it)
    for e in entries:
        timed = json.loads((fleet_dir / "out" / e["bundle"] / "manifest.json").read_text())["measured"].get("latency")
        assert e.get("latency_busy") == (timed or {}).get("busy_elsewhere")
    page = (fleet_dir / "out" / "fleet.html").read_text()
    assert page.count('class="ok"') == 6 and "a/host-fp16/report.html" in page
    before = _bytes(fleet_dir / "out")
    again = run_fleet(fleet_dir / "fleet.yaml", fleet_dir / "out", cache_dir=cache, jobs=2)
    assert all(e["cached"] for e in again.index["entries"]) and again.index["summary"]["built"] == 0
    assert _bytes(fleet_dir / "out") == before  # byte-identical
    # a fresh output folder from the same cache: the same bytes again
    third = run_fleet(fleet_dir / "fleet.yaml", fleet_dir / "elsewhere", cache_dir=cache)
    assert _bytes(fleet_dir / "elsewhere") == before and third.index["summary"]["built"] == 0


def test_changing_one_model_rebuilds_only_its_builds(fleet_dir):
    cache = fleet_dir / "cache"
    run_fleet(fleet_dir / "fleet.yaml", fleet_dir / "out", cache_dir=cache)
    _tiny(fleet_dir / "models" / "b.onnx", 16, 2)  # new weights
    result = run_fleet(fleet_dir / "fleet.yaml", fleet_dir / "out", cache_dir=cache)
    rebuilt = sorted(e["bundle"] for e in result.index["entries"] if not e["cached"])
    assert rebuilt == ["b/android-arm64-fp16", "b/host-fp16", "b/jetson-orin-nano-fp16"]


def test_a_failed_build_is_recorded_and_the_others_go_on(fleet_dir):
    spec = SPEC.replace("precisions: [fp16]", "precisions: [fp16, bf16]")  # bf16: not a TFLite or Jetson precision
    (fleet_dir / "fleet.yaml").write_text(spec)
    result = run_fleet(fleet_dir / "fleet.yaml", fleet_dir / "out", cache_dir=fleet_dir / "cache")
    failed = [e for e in result.index["entries"] if not e["ok"]]
    assert result.exit_code == FLEET_NOT_HELD and failed
    assert all(e["exit_code"] == 6 and "does not support precision bf16" in e["error"] and e["bundle"] is None
               for e in failed)
    from deploycomp.targets import load_target

    host_bf16 = 2 if "bf16" in load_target("host").precisions else 0  # host offers bf16 where its CPU computes it
    assert sum(1 for e in result.index["entries"] if e["ok"]) == 6 + host_bf16  # every fp16 build held
    assert 'class="fail"' in (fleet_dir / "out" / "fleet.html").read_text()


def test_the_cli_exit_codes_and_signing(fleet_dir):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    (fleet_dir / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    (fleet_dir / "key.pub.pem").write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    rc, stdout, stderr = cli("fleet", fleet_dir / "fleet.yaml", "--out", fleet_dir / "out", "--cache",
                             fleet_dir / "cache", "--sign-key", fleet_dir / "key.pem", "--json")
    assert rc == 0, stderr
    summary = json.loads(stdout)["summary"]
    assert summary["held"] == summary["builds"] == 6
    for entry in json.loads(stdout)["entries"]:
        assert entry["signed"]
        rc, _, stderr = cli("verify", fleet_dir / "out" / entry["bundle"], "--public-key", fleet_dir / "key.pub.pem")
        assert rc == 0, stderr
    (fleet_dir / "bad.yaml").write_text(SPEC.replace("targets: [host", "targets: [jetsn"))
    rc, _, stderr = cli("fleet", fleet_dir / "bad.yaml", "--out", fleet_dir / "out2")
    assert rc == 4 and "bad.yaml: targets: unknown target 'jetsn'" in stderr and len(stderr.strip().splitlines()) == 1
    assert not (fleet_dir / "out2").exists()


@pytest.mark.parametrize("text, needle", [
    ("models: []\ntargets: [host]\nprecisions: [fp16]", "models: List should have at least 1 item"),
    ("models:\n  - {name: a, path: models/a.onnx, colour: red}\ntargets: [host]\nprecisions: [fp16]",
     "models[0].colour: unknown key"),
    ("models:\n  - {name: a, path: models/nope.onnx}\ntargets: [host]\nprecisions: [fp16]",
     "models[0].path: models/nope.onnx not found"),
    ("models:\n  - {name: a, extends: b, path: models/a.onnx}\n  - {name: b, extends: a}\ntargets: [host]\n"
     "precisions: [fp16]", "models[0].extends: cycle through a -> b -> a"),
    ("models:\n  - {name: a, path: models/a.onnx}\ntargets: [host]\nprecisions: [fp8]", "precisions[0]: Input should be"),
    ("models:\n  - {name: a, path: models/a.onnx}\n  - {name: a, path: models/b.onnx}\ntargets: [host]\n"
     "precisions: [fp16]", "the name 'a' is used twice"),
    # (one folder on a file system that does not tell case apart: macOS, Windows)
    ("models:\n  - {name: TF, path: models/a.onnx}\n  - {name: tf, path: models/b.onnx}\ntargets: [host]\n"
     "precisions: [fp16]", "the name 'TF' is used twice, ignoring case"),
    ("just: [text", "not valid YAML"),
    # one cell twice (it had run, failed with an internal error and broken its cache entry)
    ("models:\n  - {name: a, path: models/a.onnx}\ntargets: [host, host]\nprecisions: [fp16]",
     "targets: lists 'host' twice"),
    ("models:\n  - {name: a, path: models/a.onnx, precisions: [fp16, fp16]}\ntargets: [host]\nprecisions: [fp16]",
     "models[0].precisions: lists 'fp16' twice"),
    # a judging rule checked as the build reads it (it had failed every cell, one at a time)
    ("models:\n  - {name: a, path: models/a.onnx, options: {judge_boxes: ['y:y[4]>x']}}\ntargets: [host]\n"
     "precisions: [fp16]", "models[0].options.judge_boxes: --judge-boxes 'y:y[4]>x': write BOXES"),
    ("models:\n  - {name: a, path: models/a.onnx}\ntargets: [host]\nprecisions: [fp16]\n"
     "options: {judge_where: ['probs']}", "options.judge_where: --judge-where 'probs': write OUTPUT"),
    # a misspelt key is named, not the key it stands for ("precisions: Field required")
    ("models:\n  - {name: a, path: models/a.onnx}\ntargets: [host]\nprecision: [fp16]", "precision: unknown key"),
])
def test_bad_specs_are_one_line_errors_naming_the_key(fleet_dir, text, needle):
    (fleet_dir / "s.yaml").write_text(text)
    with pytest.raises(InputDataError) as e:
        load_spec(fleet_dir / "s.yaml")
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_extends_and_per_model_overrides(fleet_dir):
    (fleet_dir / "s.yaml").write_text(SPEC.replace("    path: models/b.onnx",
                                                   "    path: models/b.onnx\n    targets: [host]\n"
                                                   "    precisions: [fp32, int8]\n    budgets: {min_cosine: 0.97}"))
    _, jobs = load_spec(fleet_dir / "s.yaml")
    b = [j for j in jobs if j.model == "b"]
    assert [(j.target, j.precision) for j in b] == [("host", "fp32"), ("host", "int8")]
    assert all(j.inputs == (("x", (1, 3, 16, 16)),) and j.calibration.name == "calib.npz" for j in b)  # from a
    assert all(j.min_cosine == 0.97 for j in b) and len([j for j in jobs if j.model == "a"]) == 3


def test_an_option_only_tflite_has_goes_to_the_cells_it_applies_to(fleet_dir):
    """``int8_io`` (full-integer I/O) for a model built for host and Android at fp32 and
    int8: only the Android int8 build gets it (a build given it elsewhere refuses it, exit
    6), the others say it was not applied; the int8 options are the same in every cell."""
    (fleet_dir / "s.yaml").write_text(SPEC.replace("precisions: [fp16]", "precisions: [fp32, int8]")
                                      .replace("targets: [host, android-arm64, jetson-orin-nano]",
                                               "targets: [host, android-arm64]\noptions: {int8_io: true, "
                                               "io_layout: nchw, int8_range: minmax}"))
    _, jobs = load_spec(fleet_dir / "s.yaml")
    cells = {(j.target, j.precision): j for j in jobs if j.model == "a"}
    assert cells["android-arm64", "int8"].options == {"int8_io": True, "io_layout": "nchw", "int8_range": "minmax"}
    assert cells["android-arm64", "fp32"].options == {"io_layout": "nchw", "int8_range": "minmax"}
    assert cells["android-arm64", "fp32"].not_applied == ("int8_io",)
    assert cells["host", "int8"].options == {"int8_range": "minmax"}
    assert cells["host", "int8"].not_applied == ("int8_io", "io_layout")


def test_the_cache_survives_concurrent_writers(tmp_path, tiny_conv):
    """Two writers finish the same key: the first rename wins, the second copy is dropped,
    and the entry is whole."""
    import deploycomp

    deploycomp.build(tiny_conv, tmp_path / "built", inputs={"x": (1, 3, 16, 16)})
    cache = BuildCache(tmp_path / "cache")
    key = "ab" + "0" * 62
    results = []
    for marker in ("first", "second"):
        staged = cache.staging()
        shutil.copytree(tmp_path / "built", staged / "bundle")
        (staged / "bundle" / "report.html").write_text(marker)  # (not an artifact the manifest lists)
        results.append(cache.publish(key, staged, {"ok": True, "ok_built": True, "who": marker}))
    assert [r["who"] for r in results] == ["first", "first"]
    entry = cache.entry(key)
    assert (entry / "bundle" / "report.html").read_text() == "first" and cache.lookup(key) is not None
    assert not list((tmp_path / "cache" / "tmp").iterdir())


def test_out_must_be_a_fleet_folder(fleet_dir):
    (fleet_dir / "mine").mkdir()
    (fleet_dir / "mine" / "notes.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="not a deploycomp fleet folder"):
        run_fleet(fleet_dir / "fleet.yaml", fleet_dir / "mine", cache_dir=fleet_dir / "cache")


ray = pytest.importorskip("ray", reason="the Ray executor needs ray (pip install 'deploycomp[ray]'; in the test extra)")


def test_ray_builds_the_fleet_and_runs_device_steps_where_a_node_offers_the_target(fleet_dir):
    """A real local Ray cluster whose one node advertises 'jetson-orin-nano': every build
    is a task; the TensorRT bundles' engine step is a task requiring that resource, so it
    runs here (and fails, as this machine has no GPU: recorded with exit 7, not hung).
    A target no node advertises (nvidia-t4) is reported at once."""
    spec = SPEC.replace("targets: [host, android-arm64, jetson-orin-nano]", "targets: [host, jetson-orin-nano, nvidia-t4]")
    (fleet_dir / "fleet.yaml").write_text(spec)
    result = run_fleet(fleet_dir / "fleet.yaml", fleet_dir / "out", cache_dir=fleet_dir / "cache", executor="ray",
                       jobs=2, ray_resources={"jetson-orin-nano": 1}, device_timeout=120)
    by = {e["bundle"]: e for e in result.index["entries"]}
    assert result.index["executor"].startswith("ray") and len(by) == 6 and all(e["ok"] for e in by.values())
    jetson = by["a/jetson-orin-nano-fp16"]["device_step"]
    assert jetson["status"] == "failed" and jetson["exit_code"] == 7 and jetson["resource"] == "jetson-orin-nano"
    t4 = by["a/nvidia-t4-fp16"]["device_step"]
    assert t4["status"] == "no-node" and "no node advertises resource 'nvidia-t4'" in t4["note"]
    assert "device_step" not in by["a/host-fp16"]
    # the same bundles as the local executor makes: a local rerun serves them from the cache
    again = run_fleet(fleet_dir / "fleet.yaml", fleet_dir / "out", cache_dir=fleet_dir / "cache")
    assert again.index["summary"]["built"] == 0


def test_changing_one_profile_rebuilds_only_its_builds(fleet_dir):
    """A fleet's own profile file: edit its budget, and only the builds for that target run
    again (the key holds the resolved profile's content, not its name)."""
    (fleet_dir / "board.yaml").write_text("extends: raspberry-pi-5\nname: board\nbudgets: {max_artifact_mb: 200}\n")
    (fleet_dir / "fleet.yaml").write_text(SPEC.replace("android-arm64, jetson-orin-nano", "board.yaml"))
    cache = fleet_dir / "cache"
    first = run_fleet(fleet_dir / "fleet.yaml", fleet_dir / "out", cache_dir=cache)
    assert sorted(e["bundle"] for e in first.index["entries"]) == ["a/board-fp16", "a/host-fp16",
                                                                    "b/board-fp16", "b/host-fp16"]
    (fleet_dir / "board.yaml").write_text("extends: raspberry-pi-5\nname: board\nbudgets: {max_artifact_mb: 100}\n")
    again = run_fleet(fleet_dir / "fleet.yaml", fleet_dir / "out", cache_dir=cache)
    assert sorted(e["bundle"] for e in again.index["entries"] if not e["cached"]) == ["a/board-fp16", "b/board-fp16"]


def test_a_cancelled_fleet_exits_143_and_leaves_no_staging(fleet_dir):
    """SIGTERM (a cancelled CI job) mid-fleet: exit 143 with one line; the cache keeps what
    finished and holds no half-built entry; every bundle in --out is whole; the workers'
    builds leave nothing in $TMPDIR (terminated, they had left their trial folders)."""
    import signal
    import subprocess
    import sys

    tmpdir = fleet_dir / "tmpdir"
    tmpdir.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "deploycomp", "fleet", str(fleet_dir / "fleet.yaml"), "--out",
                             str(fleet_dir / "out"), "--cache", str(fleet_dir / "cache"), "--jobs", "2"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmpdir)})
    for line in proc.stderr:
        if line.startswith("[1/6]"):
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 143, rest
    assert rest.strip().splitlines()[-1] == "deploycomp: terminated; nothing was written"
    assert "Traceback" not in rest, rest  # (idle workers had printed the pool queue's KeyboardInterrupt)
    assert not list((fleet_dir / "cache" / "tmp").iterdir())
    assert all((b / "manifest.json").is_file() for b in (fleet_dir / "out").glob("*/*") if b.is_dir())
    assert not list(tmpdir.iterdir())


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux's /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's parent-death signal and /proc")
def test_a_fleet_killed_outright_takes_its_workers_with_it(fleet_dir):
    """SIGKILL of the fleet's process (the out-of-memory killer): its pool workers had
    stayed under PID 1, waiting for work for good and holding the job's output pipes open,
    so a CI runner waiting for the output to end hung (probe 67). They end with it now."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen([sys.executable, "-m", "deploycomp", "fleet", str(fleet_dir / "fleet.yaml"), "--out",
                             str(fleet_dir / "out"), "--cache", str(fleet_dir / "cache"), "--jobs", "2"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for line in proc.stderr:
        if line.startswith("[1/6]"):
            break
    workers = [w for w in _children(proc.pid) if "python" in Path(f"/proc/{w}/cmdline").read_text(errors="replace")]
    assert workers, "the fleet's pool workers"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    def running(pid: int) -> bool:  # (a zombie no one reaps has ended)
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(running(w) for w in workers):
        time.sleep(0.2)
    left = [w for w in workers if running(w)]
    for w in left:  # (the test's own clean-up: not left behind on a failure)
        os.kill(w, signal.SIGKILL)
    assert not left, "workers outlived the fleet"
    proc.stderr.close()


def test_the_fleet_page_counts_dynamic_range_layers_as_int8():
    """A TFLite entry with dynamic-range layers: they are int8 layers of their own kind,
    not float ones, on the fleet page."""
    from deploycomp.fleet.index import _cell

    entry = {"ok_built": True, "ok": True, "latency_ms": 3.2, "latency_kind": "estimate", "size_mb": 1.0,
             "bundle": "m/android-arm64/int8", "fidelity": 0.99,
             "int8_layers": 8, "float_layers": 2, "dynamic_layers": 5}
    assert "8/15 layers int8 + 5 dynamic-range" in _cell(entry)
    assert "8/10 layers int8" in _cell(entry | {"dynamic_layers": 0})


def test_every_model_option_is_a_build_option():
    """A fleet model's ``options`` go to the build as they are (``BuildOptions(**options)``):
    each one the spec accepts must be a build option of the same name (``int8_time_limit``
    included), and a negative time limit is refused in the spec, not in a worker."""
    import dataclasses

    import pydantic

    from deploycomp.fleet.spec import Options
    from deploycomp.pipeline import BuildOptions

    build_fields = {f.name for f in dataclasses.fields(BuildOptions)}
    assert set(Options.model_fields) <= build_fields
    assert Options(int8_time_limit=60).int8_time_limit == 60
    assert Options(judge_channels=True).judge_channels  # (its channels judged apart in every cell)
    assert Options(feedback={"stateN": "state"}).feedback == {"stateN": "state"}  # (a stream, as --feedback)
    with pytest.raises(pydantic.ValidationError):
        Options(int8_time_limit=-1)


def test_a_cache_entry_left_without_its_bundle_is_replaced_not_a_crash(tmp_path, tiny_conv):
    """An entry whose result says built but holds no bundle (a run that failed between its
    two writes) made every later run of the same cell an internal error (KeyError
    'bundle'): the next build's entry replaces it. So does one whose bundle is not whole
    (a byte changed in its model had been placed and reported held)."""
    import deploycomp

    cache = BuildCache(tmp_path / "cache")
    key = "ab" * 32
    broken = cache.entry(key)
    broken.mkdir(parents=True)
    (broken / "result.json").write_text(json.dumps({"ok_built": True, "ok": True}))
    assert cache.lookup(key) is None
    staged = cache.staging()
    deploycomp.build(tiny_conv, staged / "bundle", inputs={"x": (1, 3, 16, 16)})
    result = cache.publish(key, staged, {"ok_built": True, "ok": True})
    assert result["bundle"] == str(broken / "bundle") and (broken / "bundle" / "manifest.json").is_file()
    model = broken / "bundle" / "model.bin"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    assert cache.lookup(key) is None  # not whole: a miss, and the next build replaces it
    staged = cache.staging()
    deploycomp.build(tiny_conv, staged / "bundle", inputs={"x": (1, 3, 16, 16)})
    assert cache.publish(key, staged, {"ok_built": True, "ok": True})["bundle"] == str(broken / "bundle")
    assert cache.lookup(key) is not None


def test_a_copy_that_fills_the_disk_is_the_machines_error_and_leaves_no_half_copy(tmp_path, monkeypatch):
    """A fleet placing its bundles on a full disk ended in an internal error (shutil.Error)
    and left a half-copied staging folder: now the OS's reason (exit 10) and nothing left."""
    import errno as errno_

    import deploycomp.fleet.run as fleet_run
    from deploycomp.errors import environment_problem

    src = tmp_path / "src"
    src.mkdir()
    (src / "manifest.json").write_text("{}")
    (src / "model.bin").write_bytes(b"x" * 100)

    def full(s, d, *a, **k):
        Path(d).mkdir(parents=True)
        (Path(d) / "manifest.json").write_text("{")
        raise shutil.Error([(str(s), str(d), f"[Errno {errno_.ENOSPC}] {os.strerror(errno_.ENOSPC)}")])

    monkeypatch.setattr(fleet_run.shutil, "copytree", full)
    with pytest.raises(OSError) as e:
        fleet_run._place(src, tmp_path / "out" / "m" / "host-fp32")
    assert e.value.errno == errno_.ENOSPC and environment_problem(e.value).exit_code == 10
    assert [p.name for p in (tmp_path / "out" / "m").iterdir()] == []


def test_staging_folders_of_a_killed_fleet_are_removed_by_the_next(tmp_path):
    """A fleet killed outright (SIGKILL) cannot clean up: its staging folders stayed in the
    cache for good. The next run's staging removes those of processes that are gone (and
    leaves a live process's)."""
    import socket

    cache = BuildCache(tmp_path / "cache")
    tmp = tmp_path / "cache" / "tmp"
    tmp.mkdir(parents=True)
    dead = tmp / f"build-{socket.gethostname()}-999999999-abc"
    live = tmp / f"build-{socket.gethostname()}-1-abc"  # (pid 1: always alive)
    dead.mkdir()
    live.mkdir()
    ours = cache.staging()
    assert not dead.exists() and live.exists() and ours.is_dir()


def test_an_interrupted_fleet_leaves_no_empty_out_folder(fleet_dir, monkeypatch):
    """A fleet interrupted before it placed anything left the --out folder it had made."""
    import deploycomp.fleet.run as fleet_run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fleet_run, "BuildCache", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_fleet(fleet_dir / "fleet.yaml", fleet_dir / "new" / "out", cache_dir=fleet_dir / "cache")
    assert not (fleet_dir / "new" / "out").exists()


ONE = SPEC.split("  - name: b")[0] + "targets: [host]\nprecisions: [fp16, int8]\n"
"""SPEC's model a alone, on host."""


def test_a_fleet_that_fails_while_placing_leaves_no_out_folder_it_made(fleet_dir, monkeypatch):
    """A full disk while placing had left the bundles placed so far and no index.json, and
    the retry was refused ("not a deploycomp fleet folder"): a folder the run made goes
    with it, and the retry builds from the cache."""
    import errno as errno_

    import deploycomp.fleet.run as fleet_run

    (fleet_dir / "one.yaml").write_text(ONE)
    real, placed = fleet_run._place, []

    def fills_up(src, dest):
        if placed:
            raise OSError(errno_.ENOSPC, os.strerror(errno_.ENOSPC), str(dest))
        placed.append(dest)
        real(src, dest)

    monkeypatch.setattr(fleet_run, "_place", fills_up)
    with pytest.raises(OSError):
        run_fleet(fleet_dir / "one.yaml", fleet_dir / "new" / "out", cache_dir=fleet_dir / "cache")
    assert placed and not (fleet_dir / "new" / "out").exists()
    monkeypatch.setattr(fleet_run, "_place", real)
    again = run_fleet(fleet_dir / "one.yaml", fleet_dir / "new" / "out", cache_dir=fleet_dir / "cache")
    assert again.ok and again.index["summary"]["cached"] == 2


def test_a_build_the_machine_failed_makes_the_fleets_exit_the_machines():
    """A full cache volume failed every cell "No space left on device", and the fleet said
    13, as if the models had failed: a build failed for the machine makes it 10 (a CI job
    can retry elsewhere); index.json still says which."""
    from deploycomp.fleet.run import FleetResult

    held = {"ok": True, "exit_code": None}
    assert FleetResult({"entries": [held]}, Path(".")).exit_code == 0
    assert FleetResult({"entries": [held, {"ok": False, "exit_code": 6}]}, Path(".")).exit_code == 13
    assert FleetResult({"entries": [{"ok": False, "exit_code": 6}, {"ok": False, "exit_code": 10}]},
                       Path(".")).exit_code == 10


def test_the_cache_key_follows_deploycomp_itself_and_what_makes_the_inputs(fleet_dir, monkeypatch):
    """The package version stays 0.1.0 over hundreds of commits: a fleet served bundles an
    older deploycomp had built. The key holds a digest of deploycomp's own files, and the
    versions of scikit-image and Pillow (the built-in samples; image folders)."""
    from deploycomp.fleet import cache as cache_module

    versions = cache_module.toolchain_versions()
    assert {"deploycomp-code", "scikit-image", "pillow"} <= set(versions)
    assert len(versions["deploycomp-code"]) == 64
    (fleet_dir / "one.yaml").write_text(ONE)
    run_fleet(fleet_dir / "one.yaml", fleet_dir / "out", cache_dir=fleet_dir / "cache")
    monkeypatch.setattr(cache_module, "code_digest", lambda: "another deploycomp")
    again = run_fleet(fleet_dir / "one.yaml", fleet_dir / "out", cache_dir=fleet_dir / "cache")
    assert again.index["summary"]["built"] == 2


def test_an_int8_option_or_a_file_beside_the_images_rebuilds_only_what_reads_it(fleet_dir):
    """An int8-only option (the range method) had rebuilt the fp16 cells too, and a README
    added to an image folder every cell of the model."""
    (fleet_dir / "one.yaml").write_text(ONE)
    run_fleet(fleet_dir / "one.yaml", fleet_dir / "out", cache_dir=fleet_dir / "cache")
    (fleet_dir / "one.yaml").write_text(ONE + "options: {int8_range: minmax}\n")
    changed = run_fleet(fleet_dir / "one.yaml", fleet_dir / "out", cache_dir=fleet_dir / "cache")
    assert sorted(e["bundle"] for e in changed.index["entries"] if not e["cached"]) == ["a/host-int8"]
    from deploycomp.fleet.cache import _data_digest

    images = fleet_dir / "images"
    images.mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "a.png")
    before = _data_digest(images, {})
    (images / "README.txt").write_text("where these came from")
    (images / "._a.png").write_bytes(b"\0\5\26\7 a macOS resource fork")  # skipped by the reader: by the key too
    assert _data_digest(images, {}) == before
    Image.fromarray(np.ones((8, 8, 3), np.uint8)).save(images / "b.png")
    assert _data_digest(images, {}) != before


def test_index_entries_describe_the_bundles_in_place(fleet_dir):
    """A rebuild of a key already in place (another cache) keeps the bundle there; its entry
    had taken the new build's manifest digest and timings, which ``diff`` then trusted."""
    from deploycomp.fleet.run import _manifest_sha

    (fleet_dir / "one.yaml").write_text(ONE.replace("[fp16, int8]", "[fp16]"))
    first = run_fleet(fleet_dir / "one.yaml", fleet_dir / "out", cache_dir=fleet_dir / "cacheA")
    second = run_fleet(fleet_dir / "one.yaml", fleet_dir / "out", cache_dir=fleet_dir / "cacheB")
    assert second.index["summary"]["built"] == 1
    entry = second.index["entries"][0]
    assert entry["manifest_sha256"] == _manifest_sha(fleet_dir / "out" / entry["bundle"])
    assert entry["latency_ms"] == first.index["entries"][0]["latency_ms"]


def test_signing_follows_the_key_and_a_bad_key_stops_the_run_first(fleet_dir):
    """A new ``--sign-key`` re-signs the bundles already in place (a key rotation had left
    the old key's signatures, and a removed signature stayed ``signed: true``); the index
    names the key; a key that cannot sign stops the run before any build."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from deploycomp.errors import DeployError
    from deploycomp.signing import signing_key_id, verify_bundle

    for name in ("one", "two"):
        key = Ed25519PrivateKey.generate()
        (fleet_dir / f"{name}.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                                  serialization.PrivateFormat.PKCS8,
                                                                  serialization.NoEncryption()))
        (fleet_dir / f"{name}.pub.pem").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (fleet_dir / "s.yaml").write_text(ONE.replace("[fp16, int8]", "[fp16]"))
    cache, out = fleet_dir / "cache", fleet_dir / "out"
    first = run_fleet(fleet_dir / "s.yaml", out, cache_dir=cache, sign_key=fleet_dir / "one.pem")
    bundle = out / first.index["entries"][0]["bundle"]
    assert first.index["entries"][0]["signed_by"] == signing_key_id(fleet_dir / "one.pem")
    rotated = run_fleet(fleet_dir / "s.yaml", out, cache_dir=cache, sign_key=fleet_dir / "two.pem")
    assert rotated.index["entries"][0]["signed_by"] == signing_key_id(fleet_dir / "two.pem")
    assert verify_bundle(bundle, fleet_dir / "two.pub.pem")["status"] == "verified"
    (bundle / "signature.json").unlink()
    unsigned = run_fleet(fleet_dir / "s.yaml", out, cache_dir=cache)
    assert unsigned.index["entries"][0]["signed"] is False
    with pytest.raises(DeployError, match="a public key; sign with the private one"):
        run_fleet(fleet_dir / "s.yaml", fleet_dir / "out2", cache_dir=cache, sign_key=fleet_dir / "one.pub.pem")
    assert not (fleet_dir / "out2").exists()


def test_a_model_that_is_no_model_is_a_recorded_failure_and_a_folder_a_spec_error(fleet_dir):
    """A truncated model had stopped the whole fleet with an internal error while its
    builds were keyed (DecodeError), and a folder given as the model likewise
    (IsADirectoryError): the first is its cells' recorded failure (exit 3, the others go
    on), the second a spec error."""
    (fleet_dir / "models" / "cut.onnx").write_bytes((fleet_dir / "models" / "a.onnx").read_bytes()[:100])
    (fleet_dir / "s.yaml").write_text("models:\n"
                                      "  - {name: a, path: models/a.onnx, inputs: {x: [1, 3, 16, 16]}}\n"
                                      "  - {name: cut, path: models/cut.onnx, inputs: {x: [1, 3, 16, 16]}}\n"
                                      "targets: [host]\nprecisions: [fp16]\n")
    result = run_fleet(fleet_dir / "s.yaml", fleet_dir / "out", cache_dir=fleet_dir / "cache")
    assert result.exit_code == FLEET_NOT_HELD
    by_model = {e["model"]: e for e in result.index["entries"]}
    assert by_model["a"]["ok"] and by_model["cut"]["exit_code"] == 3
    (fleet_dir / "d.yaml").write_text(ONE.replace("models/a.onnx", "models"))
    with pytest.raises(InputDataError, match=r"models\[0\].path: models is a folder; name the .onnx file"):
        load_spec(fleet_dir / "d.yaml")


def test_two_profile_files_named_alike_and_a_bad_preprocessing_spec_are_spec_errors(fleet_dir):
    """Two profiles of one file name built into one folder (an internal error, KeyError); a
    preprocessing spec that is missing or wrong failed every cell of its model, cached."""
    for where in ("a", "b"):
        (fleet_dir / where).mkdir()
        (fleet_dir / where / "board.yaml").write_text("name: board\nextends: android-arm64\n")
    (fleet_dir / "s.yaml").write_text(ONE.replace("targets: [host]", "targets: [a/board.yaml, b/board.yaml]"))
    with pytest.raises(InputDataError, match="would both build into a/board-fp16; give the profile files other names"):
        load_spec(fleet_dir / "s.yaml")
    (fleet_dir / "p.yaml").write_text(ONE.replace("    calibration:", "    preprocess: prep.yaml\n    calibration:"))
    with pytest.raises(InputDataError, match=r"models\[0\].preprocess: prep.yaml not found"):
        load_spec(fleet_dir / "p.yaml")
    (fleet_dir / "prep.yaml").write_text("resize: stretch\n")
    with pytest.raises(InputDataError, match=r"models\[0\].preprocess: .*prep.yaml: resize"):
        load_spec(fleet_dir / "p.yaml")
    # a model path that is a device: named (hashing /dev/zero for the cache key never ended)
    (fleet_dir / "z.yaml").write_text(ONE.replace("targets: [host]", "targets: [host]").replace(
        next(line for line in ONE.splitlines() if line.strip().startswith("path:")), "    path: /dev/zero"))
    with pytest.raises(InputDataError, match=r"models\[0\].path: /dev/zero is not a regular file"):
        load_spec(fleet_dir / "z.yaml")
    # an op type a profile refuses, not spelled as ONNX does, is named before any build
    (fleet_dir / "a" / "board.yaml").write_text("name: board\nextends: android-arm64\nunsupported_ops: [conv]\n")
    (fleet_dir / "o.yaml").write_text(ONE.replace("targets: [host]", "targets: [a/board.yaml]"))
    with pytest.raises(InputDataError, match=r"targets: .*board.yaml: field 'unsupported_ops': not an ONNX op type"):
        load_spec(fleet_dir / "o.yaml")


def test_judging_rules_and_the_box_budget_reach_the_build(fleet_dir):
    """A model's ``judge_where`` / ``judge_boxes`` (the command line's strings) and
    ``min_box_iou`` reach its builds as the build options read them."""
    from deploycomp.boxes import BoxRule
    from deploycomp.fleet.worker import _parsed

    (fleet_dir / "s.yaml").write_text(SPEC.replace(
        "    path: models/b.onnx",
        "    path: models/b.onnx\n    budgets: {min_box_iou: 0.95}\n"
        "    options: {judge_boxes: ['dets=xyxy:dets[4]>0.3'], judge_where: ['heat:probs>0.2']}"))
    _, jobs = load_spec(fleet_dir / "s.yaml")
    b = next(j for j in jobs if j.model == "b")
    assert b.min_box_iou == 0.95 and b.options["judge_boxes"] == ["dets=xyxy:dets[4]>0.3"]
    parsed = _parsed(b.options)
    assert parsed["judge_boxes"] == {"dets": BoxRule("dets", 0, "dets[4]", 0.3, "xyxy")}
    assert parsed["judge_where"] == {"heat": ("probs", 0.2)}
    assert all(j.min_box_iou is None and "judge_boxes" not in j.options for j in jobs if j.model == "a")


def test_ray_missing_is_said_before_the_cache_is_read(fleet_dir, monkeypatch):
    """``--executor ray`` without Ray: exit 7 before any cell is keyed or looked up (the
    run had listed every cell "held (cached)" and then stopped)."""
    import importlib.util

    from deploycomp.errors import BackendUnavailable
    from deploycomp.fleet import run

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))

    def keyed(*a, **k):
        raise AssertionError("a cell was keyed before the executor was checked")

    monkeypatch.setattr(run, "build_key", keyed)
    lines = []
    with pytest.raises(BackendUnavailable, match="--executor ray needs Ray"):
        run.run_fleet(fleet_dir / "fleet.yaml", fleet_dir / "out", executor="ray", progress=lines.append)
    assert lines == [] and not (fleet_dir / "out").exists()


def test_the_cache_key_reads_external_data_named_inside_control_flow_bodies(tmp_path):
    """A weight of an ``If`` branch stored beside the model is part of the build's key, as
    the top graph's are (the key had listed only those: an edited branch weight was a hit)."""
    from deploycomp.fleet.cache import external_locations

    def external(name: str, location: str) -> onnx.TensorProto:
        tensor = numpy_helper.from_array(np.ones(4, np.float32), name)
        tensor.data_location = onnx.TensorProto.EXTERNAL
        tensor.ClearField("raw_data")
        for key, value in (("location", location), ("offset", "0"), ("length", "16")):
            tensor.external_data.add(key=key, value=value)
        return tensor

    out = helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [4])
    then = helper.make_graph([helper.make_node("Add", ["x", "w_then"], ["b"])], "then", [], [out],
                             [external("w_then", "then.bin")])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["b"])], "else", [], [out])
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["s"]), helper.make_node("ReduceSum", ["s"], ["t"], keepdims=0),
         helper.make_node("Greater", ["t", "zero"], ["c"]),
         helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])],
        [external("w", "top.bin"), numpy_helper.from_array(np.float32(0), "zero")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert external_locations(path) == ["then.bin", "top.bin"]


def test_a_model_entry_carries_profiles_to_the_cells_of_dynamic_shapes(tmp_path, dynamic_hw_relu):
    """``options: {profiles: [...]}`` (``--profile`` as a spec says it; a probe had met
    "unknown key"): the TensorRT and OpenVINO cells are built with them, the TFLite ones
    (static shapes) say they were not applied, and a bad profile is refused in the spec,
    naming the key."""
    (tmp_path / "s.yaml").write_text(
        f"models:\n  - name: relu\n    path: {dynamic_hw_relu}\n    inputs: {{x: [1, 3, 16, 16]}}\n"
        "    options: {profiles: ['x:1x3x8x8:1x3x16x16:1x3x32x32']}\n"
        "targets: [host, android-arm64, jetson-orin-nano]\nprecisions: [fp32]\n")
    _, jobs = load_spec(tmp_path / "s.yaml")
    cells = {j.target: j for j in jobs}
    assert cells["jetson-orin-nano"].options == {"profiles": ["x:1x3x8x8:1x3x16x16:1x3x32x32"]}
    assert cells["host"].options == {"profiles": ["x:1x3x8x8:1x3x16x16:1x3x32x32"]}
    # the range serves the cells that take one, `inputs` the others (both had gone to every
    # cell, and the host and Jetson builds refused "both --input and --profile")
    assert cells["host"].inputs == cells["jetson-orin-nano"].inputs == ()
    assert cells["android-arm64"].inputs == (("x", (1, 3, 16, 16)),)
    from deploycomp.fleet.spec import Options

    assert Options(validation_samples=0).model_dump(exclude_defaults=True) == {"validation_samples": 0}
    assert cells["android-arm64"].options == {} and cells["android-arm64"].not_applied == ("profiles",)
    (tmp_path / "s.yaml").write_text(
        f"models:\n  - name: relu\n    path: {dynamic_hw_relu}\n    inputs: {{x: [1, 3, 16, 16]}}\n"
        "    options: {profiles: ['x:1x3x8x8:1x3x16x16:1x3x32x32']}\n"
        "targets: [host, android-arm64, jetson-orin-nano]\nprecisions: [fp32]\n")
    result = run_fleet(tmp_path / "s.yaml", tmp_path / "out", cache_dir=tmp_path / "cache")
    assert len(result.index["entries"]) == 3
    for entry in result.index["entries"]:
        assert entry["ok"], entry
        manifest = json.loads((tmp_path / "out" / entry["bundle"] / "manifest.json").read_text())
        assert manifest["io"].get("profiles", {}).get("x") == (
            None if entry["target"] == "android-arm64" else {"min": [1, 3, 8, 8], "opt": [1, 3, 16, 16], "max": [1, 3, 32, 32]})
    (tmp_path / "s.yaml").write_text(
        f"models:\n  - name: relu\n    path: {dynamic_hw_relu}\n    options: {{profiles: ['x:1x3x8x8']}}\n"
        "targets: [jetson-orin-nano]\nprecisions: [fp32]\n")
    with pytest.raises(InputDataError, match=r"models\[0\]\.options\.profiles: .*--profile") as e:
        load_spec(tmp_path / "s.yaml")
    assert "\n" not in str(e.value)


def test_a_bad_fleet_target_is_named_under_the_fleets_key(tmp_path, tiny_conv):
    """A missing profile in the fleet's own ``targets`` had been named as the first model's
    (``models[0].targets``), with the file's prefix said twice."""
    (tmp_path / "s.yaml").write_text(f"models:\n  - {{name: a, path: {tiny_conv}}}\n"
                                     "targets: [host, prof/nope.yaml]\nprecisions: [fp32]\n")
    with pytest.raises(InputDataError) as e:
        load_spec(tmp_path / "s.yaml")
    message = str(e.value)
    assert message.startswith(f"{tmp_path / 's.yaml'}: targets: prof/nope.yaml not found") and message.count("s.yaml") == 1
