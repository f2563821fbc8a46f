"""A polite tool in CI: interrupts, the machine's own errors, --force, privacy, families.

Specifications from the point of view of a CI job or provisioning script: what exit
code and what one line it sees, and what is (not) left on disk or the network.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import deploycomp
from deploycomp.errors import OutputExistsError
from deploycomp.pipeline import BuildOptions, build
from tests.test_cli import _one_line_error, cli


def _leftovers(folder: Path) -> list[str]:
    """Hidden staging, probe or trial folders a build may have left next to --out."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("stage", ["load + optimize", "int8 calibration", "lower (openvino)", "validate"])
def test_interrupt_at_any_stage_leaves_nothing(tiny_conv, tmp_path, stage):
    """Ctrl-C arrives as KeyboardInterrupt wherever the build is: it propagates (the CLI
    turns it into exit 130), and neither the bundle nor its staging folder remains."""
    def progress(current: str) -> None:
        if current == stage:
            raise KeyboardInterrupt

    calib = [{"x": np.random.default_rng(i).random((1, 3, 16, 16), dtype=np.float32)} for i in range(8)]
    opts = BuildOptions(model=tiny_conv, out=tmp_path / "out", precision="int8", calibration=calib,
                        inputs=[("x", (1, 3, 16, 16))], progress=progress)
    with pytest.raises(KeyboardInterrupt):
        build(opts)
    assert not (tmp_path / "out").exists()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("sig, stage, code, said", [
    (signal.SIGINT, "stage: validate", 130, "interrupted"),   # Ctrl-C
    (signal.SIGTERM, "stage: lower", 143, "terminated"),      # a cancelled CI job
])
def test_a_signal_in_the_cli_exits_with_one_line(tiny_conv, tmp_path, sig, stage, code, said):
    """The signal mid-build: its exit code, one line, no traceback, nothing at --out.
    The build runs with the signal's default disposition, as a terminal gives it: a
    shell without job control starts background jobs (a CI script's ``cmd &``) with
    SIGINT ignored, and a Ctrl-C there is rightly not ours to handle."""
    proc = subprocess.Popen([sys.executable, "-m", "deploycomp", "-v", "build", str(tiny_conv), "--out",
                             str(tmp_path / "out")], stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL))
    for line in proc.stderr:
        if stage in line:
            proc.send_signal(sig)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == code, rest
    assert rest.strip().splitlines()[-1] == f"deploycomp: {said}; nothing was written"
    assert "Traceback" not in rest
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_a_sigterm_after_the_build_finished_says_the_bundle_is_whole(tiny_conv, tmp_path):
    """SIGTERM once the command has returned, while the process shuts down (tqdm's and the
    runtimes' exit handlers): exit 143 and one line saying the bundle was written whole,
    not a traceback from an exit handler with exit 0, nor a silent 143."""
    code = textwrap.dedent(f"""
        import os, signal
        from deploycomp.cli import main
        main(["build", {str(tiny_conv)!r}, "--out", "out"], standalone_mode=False)
        os.kill(os.getpid(), signal.SIGTERM)
        import time; time.sleep(30)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "deploycomp: terminated; out was written whole before it"
    assert "Traceback" not in proc.stderr and (tmp_path / "out" / "manifest.json").exists()


def _sigterm_when_placed(model: Path, precision: str, swallowed: bool = False) -> str:
    """A build whose SIGTERM arrives the moment its bundle is in place: sent from inside the
    placement (or, ``swallowed``, from a garbage collector's callback there, where Python
    discards the handler's exception)."""
    signal_it = ("weakref.finalize(Holder(), lambda: [os.kill(os.getpid(), signal.SIGTERM), sum(range(10**5))])"
                 if swallowed else "os.kill(os.getpid(), signal.SIGTERM)")
    return textwrap.dedent(f"""
        import os, signal, sys, weakref
        import deploycomp.auto, deploycomp.bundle
        real = deploycomp.bundle.replace_folder

        class Holder:
            pass

        def placing(new, out):
            real(new, out)
            if out.name == "out":  # (not an auto candidate's)
                {signal_it}

        deploycomp.bundle.replace_folder = deploycomp.auto.replace_folder = placing
        from deploycomp.cli import main
        sys.argv = ["deploycomp", "build", {str(model)!r}, "--out", "out", "--precision", {precision!r}]
        main()
    """)


@pytest.mark.parametrize("precision, swallowed", [("fp32", False), ("fp32", True), ("auto", False)])
def test_a_sigterm_as_the_bundle_is_placed_names_it(tiny_conv, tmp_path, precision, swallowed):
    """A SIGTERM in the moment after the bundle was put at ``--out`` (before the build had
    returned) said "terminated; nothing was written" beside a whole bundle; raised inside a
    garbage collector's callback it was lost (exit 0, a traceback on stderr); after an
    ``auto`` build, the candidates' folder was left beside ``--out`` (probe 67)."""
    proc = subprocess.run([sys.executable, "-c", _sigterm_when_placed(tiny_conv, precision, swallowed)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
    assert proc.returncode == 143, proc.stderr[-800:]
    assert proc.stderr.strip().splitlines()[-1] == "deploycomp: terminated; out was written whole before it"
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    deploycomp.load(tmp_path / "out")  # whole
    assert _leftovers(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir() if p != tiny_conv) == ["out"]


def test_a_signal_waits_for_a_placement_to_finish(tmp_path):
    """Between moving the old bundle aside and putting the new one in its place, a signal
    had left ``--out`` missing (the new bundle's staging folder then removed): the signal is
    held until the placement is done, then acted on."""
    from deploycomp.bundle import placed, replace_folder

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old").write_text("old")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "new").write_text("new")
    seen: list[str] = []

    def handler(signum, frame):
        seen.append("out" if (tmp_path / "out" / "new").exists() else "missing")
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    real = os.replace
    try:
        def replace(src, dst):  # the signal lands between the two renames
            real(src, dst)
            if Path(dst).name.startswith(".out.old-"):
                os.kill(os.getpid(), signal.SIGTERM)

        with pytest.raises(KeyboardInterrupt):
            import unittest.mock

            with unittest.mock.patch("deploycomp.bundle.os.replace", replace):
                replace_folder(tmp_path / "new", tmp_path / "out")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == ["out"] and (tmp_path / "out" / "new").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and placed[-1] == tmp_path / "out"


def test_an_auto_build_killed_leaves_nothing_the_next_build_keeps(tiny_conv, tmp_path):
    """SIGKILL during ``--precision auto`` left its candidates' folder (a ``mkdtemp`` name)
    beside ``--out`` for good: it is named for the host and process now, and the next build
    into the same ``--out`` removes it."""
    proc = subprocess.Popen([sys.executable, "-m", "deploycomp", "-v", "build", str(tiny_conv), "--out",
                             str(tmp_path / "out"), "--precision", "auto"], stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    for line in proc.stderr:
        if "stage: auto: fp16" in line:
            proc.kill()
            break
    proc.wait(timeout=120)
    assert [p.name for p in tmp_path.glob(".out.auto-*")], "the killed build's candidates' folder"
    deploycomp.build(tiny_conv, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir() if p != tiny_conv) == ["out"]


def test_scratch_a_killed_build_left_in_tmpdir_is_removed_by_the_next_build(tiny_conv, tmp_path, monkeypatch):
    """SIGKILL during an int8 search or a conversion left a trial's ``model.xml``/``.bin``
    or a converter's ``model.onnx`` in ``$TMPDIR`` for good (probe 67): scratch folders are
    named for their host and process, and the next build removes those of a process that is
    gone (a live one's stays)."""
    import socket
    import tempfile

    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", None)  # (read again from TMPDIR)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    left = tmp_path / "tmp" / f"deploycomp-{host}-{dead.pid}-abc123"
    live = tmp_path / "tmp" / f"deploycomp-{host}-{os.getppid()}-def456"
    other = tmp_path / "tmp" / f"deploycomp-another-host-{dead.pid}-ghi789"
    for folder in (left, live, other):
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"x")
    deploycomp.build(tiny_conv, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "tmp").iterdir()) == sorted([live.name, other.name])


def test_what_a_killed_build_left_is_removed_by_the_next_build_into_the_same_out(tiny_conv, tmp_path):
    """SIGKILL (the out-of-memory killer, or a crash inside a native library: OpenVINO's
    converter segfaulted on a real DFT) leaves no chance to clean up: the staging folder
    stays. The next build into the same ``--out`` removes it; a live build's is left alone,
    and so is one named for another host (``--out`` on a file system a fleet shares)."""
    proc = subprocess.Popen([sys.executable, "-m", "deploycomp", "-v", "build", str(tiny_conv), "--out",
                             str(tmp_path / "out")], stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    for line in proc.stderr:
        if "stage: validate" in line:
            proc.kill()
            break
    proc.wait(timeout=120)
    abandoned = _leftovers(tmp_path)
    assert len(abandoned) == 1 and abandoned[0].startswith(".out.staging-")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        here = tmp_path / f".out.staging-{socket.gethostname()}-{live.pid}"
        elsewhere = tmp_path / ".out.staging-another-host-1"
        here.mkdir()
        elsewhere.mkdir()
        rc, _, stderr = cli("build", tiny_conv, "--out", tmp_path / "out")
        assert rc == 0, stderr
        assert _leftovers(tmp_path) == sorted([here.name, elsewhere.name])
    finally:
        live.kill()


def test_a_crash_in_a_native_library_says_where_it_happened(tmp_path):
    """A segmentation fault inside a library (OpenVINO's converter on a real DFT, before
    the spectral pass) ended a build with exit 139 and nothing on stderr; the CLI has
    Python's fault report on, which names the code that was running."""
    code = textwrap.dedent("""
        import ctypes
        from deploycomp.cli import main
        main(["targets"], standalone_mode=False)
        ctypes.string_at(0)  # what a native library's bad read does
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == -signal.SIGSEGV
    assert "Fatal Python error: Segmentation fault" in proc.stderr and "string_at" in proc.stderr


def test_an_unwritable_out_is_an_environment_error(tiny_conv, tmp_path):
    """Exit 10 and one line, before any work. As root, permission bits do not stop a
    write, so there the parent is a kernel folder that refuses everyone."""
    if os.geteuid() == 0:
        parent = Path("/sys/kernel")
    else:
        parent = tmp_path / "ro"
        parent.mkdir()
        parent.chmod(0o555)
    rc, _, stderr = cli("build", tiny_conv, "--out", parent / "bundle")
    assert rc == 10
    _one_line_error(stderr, str(parent))
    assert not (parent / "bundle").exists()


def test_out_dot_and_force_on_a_users_folder_are_refused(tiny_conv, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    rc, _, stderr = cli("build", tiny_conv, "--out", ".", "--force", cwd=tmp_path)
    assert rc == 9
    _one_line_error(stderr, "current folder")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("mine")
    rc, _, stderr = cli("build", tiny_conv, "--out", tmp_path / "docs", "--force")
    assert rc == 9
    _one_line_error(stderr, "not a deploycomp bundle")
    assert (tmp_path / "docs" / "a.md").read_text() == "mine" and (tmp_path / "notes.txt").exists()


def test_force_replaces_a_previous_bundle(tiny_conv, tmp_path):
    deploycomp.build(tiny_conv, tmp_path / "b")
    with pytest.raises(OutputExistsError):
        deploycomp.build(tiny_conv, tmp_path / "b", precision="fp16")
    deploycomp.build(tiny_conv, tmp_path / "b", precision="fp16", force=True)
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["precision"] == "fp16"
    assert _leftovers(tmp_path) == []


_AUDIT = textwrap.dedent('''
    """Test hook: record every network call and every file opened for writing."""
    import os, sys
    _log = os.environ["DEPLOYCOMP_TEST_AUDIT"]
    def _hook(event, args):
        if event in ("socket.connect", "socket.getaddrinfo", "socket.sendto", "urllib.Request"):
            with open(_log, "a") as f:
                f.write(f"{event} {args!r}\\n")
    sys.addaudithook(_hook)
''')


def test_a_build_is_private(tiny_conv, tmp_path):
    """With a fresh HOME: no file anywhere but the cache and --out, and no network call
    from deploycomp or a dependency (OpenVINO's telemetry included), for an OpenVINO int8,
    a TFLite and a TensorRT build. Python-level sockets are audited in every process."""
    home, cache, tmp, work, hooks = (tmp_path / d for d in ("home", "cache", "tmp", "work", "hooks"))
    for d in (home, tmp, work, hooks):
        d.mkdir()
    (hooks / "sitecustomize.py").write_text(_AUDIT)
    audit = tmp_path / "audit.log"
    calib = work / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).random((8, 3, 16, 16), dtype=np.float32))
    env = dict(os.environ, HOME=str(home), DEPLOYCOMP_CACHE=str(cache), TMPDIR=str(tmp), XDG_CACHE_HOME=str(home / ".cache"),
               XDG_CONFIG_HOME=str(home / ".config"), PYTHONPATH=os.pathsep.join([str(hooks), os.getcwd()]),
               DEPLOYCOMP_TEST_AUDIT=str(audit))
    env.pop("CI", None)  # OpenVINO's telemetry stays quiet in CI anyway: test the case where it would not
    for target, precision in (("host", "int8"), ("android-arm64", "fp16"), ("jetson", "fp16")):
        proc = subprocess.run([sys.executable, "-m", "deploycomp", "build", str(tiny_conv), "--target", target,
                               "--precision", precision, "--calibration", str(calib), "--input", "x:1x3x16x16",
                               "--out", str(work / f"out-{target}")], env=env, cwd=work, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == "", proc.stderr  # quiet: LiteRT's "INFO: Created ... delegate" line is silenced
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []
    assert sorted(p.name for p in tmp.iterdir()) == []
    assert sorted(p.name for p in work.iterdir()) == ["calib.npz", "out-android-arm64", "out-host", "out-jetson"]
    assert not audit.exists(), audit.read_text()


def test_family_targets_build_one_bundle_for_every_member(tiny_conv, tmp_path):
    """`--target jetson` (what users type first): the Orin Nano's budgets (the tightest),
    a DLA planned for the members that have one, and the family in the manifest."""
    rc, stdout, stderr = cli("build", tiny_conv, "--target", "jetson", "--precision", "fp16", "--out", tmp_path / "b",
                             "--json")
    assert rc == 0, stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    family = manifest["target"]["family"]
    assert family["name"] == "jetson"
    assert family["members"] == ["jetson-orin-nano", "jetson-orin-nano-super", "jetson-orin-nx", "jetson-agx-orin"]
    assert manifest["target"]["profile"]["budgets"]["max_memory_mb"] == 2048  # the Nano's
    plan = json.loads((tmp_path / "b" / "build_plan.json").read_text())
    assert plan["dla_core"] == 0 and plan["gpu_fallback"]
    rc, stdout, _ = cli("targets")
    assert "jetson-orin-nano, jetson-orin-nano-super, jetson-orin-nx, jetson-agx-orin" in stdout
    rc, _, stderr = cli("build", tiny_conv, "--target", "jetsn", "--out", tmp_path / "c")
    assert rc == 5
    _one_line_error(stderr, "unknown target 'jetsn'", "families: ", "jetson")


def test_host_describes_this_machine():
    from deploycomp.targets import cpu_name, load_target

    host = load_target("host")
    assert host.description.startswith(f"this machine: {cpu_name()}")
    assert host.resolved_from in host.description


def test_a_ray_fleet_is_private_too(tmp_path):
    """Ray starts its own processes: with a fresh HOME and TMPDIR nothing stays outside the
    cache and --out (no ~/.ray/auth_token, no session folders), and no usage report."""
    pytest.importorskip("ray", reason="the Ray executor needs ray (in the test extra)")
    from tests.test_fleet import SPEC, _tiny

    home, cache, tmp, work = (tmp_path / d for d in ("home", "cache", "tmp", "work"))
    for d in (home, tmp, work, work / "models", work / "data"):
        d.mkdir()
    _tiny(work / "models" / "a.onnx", 8, 0)
    _tiny(work / "models" / "b.onnx", 16, 1)
    np.savez(work / "data" / "calib.npz", x=np.random.default_rng(0).random((8, 3, 16, 16), dtype=np.float32))
    (work / "fleet.yaml").write_text(SPEC.replace("android-arm64, jetson-orin-nano", "jetson-orin-nano"))
    env = dict(os.environ, HOME=str(home), DEPLOYCOMP_CACHE=str(cache), TMPDIR=str(tmp), XDG_CACHE_HOME=str(home / ".c"))
    env.pop("RAY_AUTH_TOKEN", None)
    proc = subprocess.run([sys.executable, "-m", "deploycomp", "fleet", "fleet.yaml", "--out", "out", "--executor",
                           "ray", "--jobs", "2"], env=env, cwd=work, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []
    assert sorted(p.name for p in tmp.iterdir()) == []
    assert sorted(p.name for p in work.iterdir()) == ["data", "fleet.yaml", "models", "out"]


def test_a_file_size_limit_is_an_environment_error(tiny_conv, tmp_path):
    """`ulimit -f` caps what a process may write: exit 10 and one line (it was an internal
    error, exit 1: EFBIG was not counted among the machine's refusals)."""
    import resource

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # (Python ignores SIGXFSZ: EFBIG)

    proc = subprocess.run([sys.executable, "-m", "deploycomp.cli", "build", str(tiny_conv), "--out", str(tmp_path / "b")],
                          capture_output=True, text=True, preexec_fn=limited)
    assert proc.returncode == 10, proc.stderr
    _one_line_error(proc.stderr, "File too large")
    assert not (tmp_path / "b").exists()


def test_a_damaged_npz_is_bad_input_data(tiny_conv, tmp_path):
    """A member whose bytes were damaged (a bad CRC) was an internal error (BadZipFile)."""
    np.savez(tmp_path / "val.npz", x=np.zeros((2, 3, 16, 16), np.float32))
    data = bytearray((tmp_path / "val.npz").read_bytes())
    data[200:260] = b"\xff" * 60
    (tmp_path / "val.npz").write_bytes(bytes(data))
    rc, _, stderr = cli("build", tiny_conv, "--out", tmp_path / "b", "--validation-data", tmp_path / "val.npz")
    assert rc == 4
    _one_line_error(stderr, "val.npz")


def test_an_unreadable_input_file_is_an_environment_error(tiny_conv, tmp_path):
    """A model or data file without read permission was click's usage error (4 lines, exit
    2); permissions are the machine's answer: one line, exit 10. As root, read permission
    is enforced only without the capability to override it (setpriv drops it)."""
    import shutil

    model = tmp_path / "m.onnx"
    shutil.copy(tiny_conv, model)
    model.chmod(0)
    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("as root, needs setpriv to drop the capability to read any file")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]
    proc = subprocess.run([*prefix, sys.executable, "-m", "deploycomp.cli", "build", str(model), "--out", str(tmp_path / "b")],
                          capture_output=True, text=True)
    assert proc.returncode == 10, proc.stderr
    _one_line_error(proc.stderr, "m.onnx")
    # an image of a calibration folder, and a fleet spec, the same (they had been exit 4)
    from PIL import Image

    model.chmod(0o644)
    (tmp_path / "calib").mkdir()
    for i in range(4):
        Image.new("RGB", (16, 16), (60 * i, 90, 120)).save(tmp_path / "calib" / f"{i}.png")
    (tmp_path / "calib" / "3.png").chmod(0)
    spec = tmp_path / "fleet.yaml"
    spec.write_text(f"models: [{{path: {model}}}]\ntargets: [host]\n")
    spec.chmod(0)
    for args, name in ((["build", str(model), "--precision", "int8", "--calibration", str(tmp_path / "calib"),
                         "--preprocess", "{resize: resize}", "--out", str(tmp_path / "c")], "3.png"),
                       (["fleet", str(spec), "--out", str(tmp_path / "f")], "fleet.yaml")):
        proc = subprocess.run([*prefix, sys.executable, "-m", "deploycomp.cli", *args], capture_output=True, text=True)
        assert proc.returncode == 10, proc.stderr
        _one_line_error(proc.stderr, f"Permission denied: {tmp_path}")
        assert name in proc.stderr


def test_a_signal_after_the_bundle_was_finished_says_so(tiny_conv, tmp_path, monkeypatch):
    """A Ctrl-C in the moment after the bundle was written, while the summary printed, said
    "nothing was written" (exit 130) beside a whole bundle: now it says the bundle was
    written whole before it, and the bundle verifies."""
    from click.testing import CliRunner

    import deploycomp.cli as cli_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_module, "_print_summary", interrupted)
    result = CliRunner().invoke(cli_module.main, ["build", str(tiny_conv), "--out", str(tmp_path / "b")])
    assert result.exit_code == 130
    assert f"{tmp_path / 'b'} was written whole before it" in result.output
    deploycomp.load(tmp_path / "b")  # (whole: every file as its manifest says)


def test_a_ctrl_c_inside_a_native_library_start_up_is_an_interrupt(tiny_conv, tmp_path, monkeypatch):
    """A Ctrl-C that lands while a native library initializes surfaces as that library's
    error (``ImportError: initialization failed``): it had been said as an internal error,
    exit 1; it is an interrupt, exit 130, nothing written."""
    from click.testing import CliRunner

    import deploycomp.cli as cli_module

    def start_up_interrupted(*args, **kwargs):
        with pytest.raises(KeyboardInterrupt):  # the handler records the signal, then interrupts
            cli_module._on_sigint(2, None)
        raise ImportError("initialization failed")  # (the library caught it and failed its own way)

    monkeypatch.setattr(cli_module, "_INTERRUPTED", [])
    monkeypatch.setattr(cli_module, "_run_build", start_up_interrupted)
    result = CliRunner().invoke(cli_module.main, ["build", str(tiny_conv), "--out", str(tmp_path / "b")])
    assert result.exit_code == 130, result.output
    assert result.output.strip().splitlines()[-1] == "deploycomp: interrupted; nothing was written"
    assert not (tmp_path / "b").exists()
    def start_up_failed(*args, **kwargs):
        raise ImportError("initialization failed")

    monkeypatch.setattr(cli_module, "_INTERRUPTED", [])  # without a Ctrl-C the same error is ours
    monkeypatch.setattr(cli_module, "_run_build", start_up_failed)
    result = CliRunner().invoke(cli_module.main, ["build", str(tiny_conv), "--out", str(tmp_path / "b")])
    assert result.exit_code == 1 and "internal error (ImportError)" in result.output
    assert result.output.rstrip().endswith("(a bug in deploycomp: rerun with -v for the traceback, and report it)")


def test_an_example_without_pip_to_fetch_it_says_so(tmp_path, monkeypatch):
    """In a uv-made venv (no pip module) ``deploycomp example`` had failed with pip's own
    "No module named pip", said as a failed fetch from the package index."""
    import importlib.util

    from deploycomp import examples
    from deploycomp.errors import EnvironmentProblem

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pip" else real(name, *a))
    with pytest.raises(EnvironmentProblem, match=r"has no pip to download it with; install pip") as info:
        examples._download_wheel("nudenet==3.4.2", tmp_path / "wheels")
    assert info.value.exit_code == 10 and not (tmp_path / "wheels").exists()


def test_a_fetch_that_cannot_reach_the_index_is_the_environments(tmp_path, monkeypatch):
    """Behind a dead proxy pip's last line is "No matching distribution found": said so, with
    exit 2, it sent users looking for a version. The refusal is the network's (exit 10,
    a CI job can retry), and nothing is left in the cache."""
    from deploycomp import examples
    from deploycomp.errors import EnvironmentProblem

    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.setenv("PIP_RETRIES", "1")  # (with none, pip says nothing of the connection: only its last line)
    with pytest.raises(EnvironmentProblem, match=r"cannot fetch silero-vad==5\.1\.2 from the package index: "
                                                 r"(the connection was refused|no connection|the proxy refused)") as e:
        examples._download_wheel("silero-vad==5.1.2", tmp_path / "wheels")
    assert e.value.exit_code == 10 and list((tmp_path / "wheels").iterdir()) == []


def test_a_truncated_wheel_in_the_cache_is_not_taken(tmp_path):
    """A fetch that ran out of disk had left part of a wheel in the cache, and every later
    ``example`` failed on it (internal error, BadZipFile) until it was removed by hand: it
    is removed, and fetched again; fetches now write through a folder of their own."""
    import zipfile

    from deploycomp.examples import _wheel_in

    (tmp_path / "silero_vad-5.1.2-py3-none-any.whl").write_bytes(b"PK\x03\x04" + b"\0" * 100)
    assert _wheel_in(tmp_path, "silero_vad") is None and list(tmp_path.iterdir()) == []
    with zipfile.ZipFile(tmp_path / "silero_vad-5.1.2-py3-none-any.whl", "w") as zf:
        zf.writestr("silero_vad/__init__.py", "")
    assert _wheel_in(tmp_path, "silero_vad") == tmp_path / "silero_vad-5.1.2-py3-none-any.whl"


def test_the_cache_folder_is_the_environments_to_get_right(tmp_path, monkeypatch):
    """``DEPLOYCOMP_CACHE`` naming a file, and a process with no home (no ``HOME``, no
    passwd entry: ``docker run --user``) or an empty ``HOME`` (the cache had gone to
    ``/.cache``): one line, exit 10, not an internal error."""
    from deploycomp.errors import EnvironmentProblem
    from deploycomp.examples import cache_dir

    (tmp_path / "file").write_text("")
    monkeypatch.setenv("DEPLOYCOMP_CACHE", str(tmp_path / "file"))
    with pytest.raises(EnvironmentProblem, match="deploycomp's cache .* is not a folder") as e:
        cache_dir()
    assert e.value.exit_code == 10
    monkeypatch.delenv("DEPLOYCOMP_CACHE")
    monkeypatch.setenv("HOME", "")
    with pytest.raises(EnvironmentProblem, match="HOME is unset or empty"):
        cache_dir()
    monkeypatch.delenv("HOME")
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: (_ for _ in ()).throw(
        RuntimeError("Could not determine home directory."))))
    with pytest.raises(EnvironmentProblem, match="set DEPLOYCOMP_CACHE to a folder"):
        cache_dir()


def test_a_sigterm_once_the_summary_is_out_is_never_silent(tiny_conv, tmp_path):
    """The process's own exit had taken about half a second after the summary (the
    runtimes' destructors, after Python had put the default signal handlers back): a
    SIGTERM there ended it with 143 and no line, the bundle whole, five times of five in a
    probe. Now it exits once its output is flushed: a SIGTERM sent on reading the summary
    finds it gone (0), or says the bundle was written whole (143)."""
    proc = subprocess.Popen([sys.executable, "-m", "deploycomp", "build", str(tiny_conv), "--out", "out"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    first = proc.stdout.readline()  # (the summary's first line: stdout is flushed as the command ends)
    assert first.startswith("out: ")
    time.sleep(0.05)  # (the old exit's half second, as a cancelled job's signal would land in it)
    try:
        proc.send_signal(signal.SIGTERM)
    except ProcessLookupError:
        pass
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0 or (proc.returncode == 143 and "out was written whole before it" in stderr), \
        (proc.returncode, stderr)
    assert (tmp_path / "out" / "manifest.json").exists()


def test_closed_or_full_standard_streams_change_nothing_but_what_is_said(tiny_conv, tmp_path):
    """A CI step that closed stderr (``2>&-``) got no bundle and exit 1 from every command
    (the fault handler refused a missing stderr); stdout closed, a traceback after the
    build; ``--json`` on a full stdout, a traceback and exit 1 for a bad model. Now: the
    build happens, the exit code is the documented one, and a failure to print after the
    bundle was placed says the bundle is whole."""
    def run(*args, **streams):
        return subprocess.run([sys.executable, "-m", "deploycomp", *map(str, args)], text=True, **streams)

    no_stderr = run("build", tiny_conv, "--out", tmp_path / "a", "--json", stdout=subprocess.PIPE,
                    preexec_fn=lambda: os.close(2))
    assert no_stderr.returncode == 0 and json.loads(no_stderr.stdout)["ok"] is True
    assert (tmp_path / "a" / "manifest.json").is_file()
    bad = run("build", tmp_path / "missing.onnx", "--out", tmp_path / "m", "--json", stdout=subprocess.PIPE,
              preexec_fn=lambda: os.close(2))
    assert bad.returncode == 3 and json.loads(bad.stdout)["exit_code"] == 3

    no_stdout = run("build", tiny_conv, "--out", tmp_path / "b", stderr=subprocess.PIPE, preexec_fn=lambda: os.close(1))
    assert no_stdout.returncode == 0 and no_stdout.stderr == "" and (tmp_path / "b" / "manifest.json").is_file()

    with open("/dev/full", "w") as full:
        bad = run("build", tmp_path / "missing.onnx", "--out", tmp_path / "m", "--json", stdout=full,
                  stderr=subprocess.PIPE)
        assert bad.returncode == 3, bad.stderr
        _one_line_error(bad.stderr, "missing.onnx")
        summary = run("build", tiny_conv, "--out", tmp_path / "c", stdout=full, stderr=subprocess.PIPE)
    assert summary.returncode == 10
    _one_line_error(summary.stderr, "No space left on device")
    assert summary.stderr.rstrip().endswith(f"; {tmp_path / 'c'} was written whole before it")


def test_a_full_disk_without_a_file_named_says_where_it_may_be():
    """A write to an open file names none: a full $TMPDIR had read "No space left on
    device" alone, and users looked at --out."""
    import errno as errno_
    import tempfile

    from deploycomp.errors import environment_problem

    said = str(environment_problem(OSError(errno_.ENOSPC, os.strerror(errno_.ENOSPC))))
    assert said == f"No space left on device (writing the output, or the temporary folder {tempfile.gettempdir()})"
    assert str(environment_problem(OSError(errno_.ENOSPC, "No space left on device", "/o/x"))) == \
        "No space left on device: /o/x"


def test_a_native_runtime_out_of_memory_is_the_environments(tiny_conv, tmp_path):
    """Under ``ulimit -v`` ONNX Runtime's arena fails with its own words (and OpenVINO or
    LiteRT with C++'s ``std::bad_alloc``): a host fp16 build of PP-OCRv4 det read "internal
    error (Fail)" after a red log line; out of memory is the machine's, exit 10."""
    import resource

    from deploycomp.errors import environment_problem

    arena = RuntimeError("[ONNXRuntimeError] : 1 : FAIL : bfc_arena.cc:359 AllocateRawInternal Failed to allocate "
                         "memory for requested buffer of size 6553600")
    for e in (arena, RuntimeError("std::bad_alloc"), MemoryError()):
        assert environment_problem(e).exit_code == 10 and "out of memory" in str(environment_problem(e))
    assert environment_problem(RuntimeError("Failed to allocate the output tensor's name")) is None
    # under ``ulimit -v 2G`` a host fp16 build of U^2-Net-p could not start its range check's threads
    thread = environment_problem(RuntimeError("can't start new thread"))
    assert thread.exit_code == 10 and "could not start a thread" in str(thread) and "ulimit" in str(thread)

    def limited():  # room for the interpreter and the runtimes, not for a 1.5 GB tensor
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    big = tmp_path / "big.onnx"  # a real model's first op, at a size nothing here can allocate
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Tile", ["x", "reps"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [helper.make_tensor("reps", TensorProto.INT64, [2], [400_000, 1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), big)
    proc = subprocess.run([sys.executable, "-m", "deploycomp", "build", str(big), "--out", str(tmp_path / "b")],
                          capture_output=True, text=True, preexec_fn=limited)
    assert proc.returncode == 10, proc.stderr
    _one_line_error(proc.stderr, "out of memory")
    assert "\x1b[" not in proc.stderr and not (tmp_path / "b").exists()


def test_paths_in_any_encoding_and_any_locale_build(tiny_conv, tmp_path):
    """A folder named in Latin-1 bytes (not UTF-8) failed every build as an internal error
    (the report's write on host, LiteRT's binding on Android), and a UTF-8 name under
    ``LC_ALL=POSIX`` with ``PYTHONUTF8=0`` failed writing in ASCII: deploycomp's own files
    are UTF-8 whatever the locale, and a path is its bytes."""
    import shutil

    odd = os.fsencode(tmp_path) + b"/lat\xe9"
    os.mkdir(odd)
    shutil.copy(tiny_conv, odd + b"/m\xe9.onnx")
    for target in ("host", "android-arm64"):
        proc = subprocess.run([sys.executable, "-m", "deploycomp", "build", odd + b"/m\xe9.onnx", "--target", target,
                               "--out", odd + b"/o-" + target.encode()], capture_output=True)
        assert proc.returncode == 0, proc.stderr
        assert deploycomp.load(os.fsdecode(odd + b"/o-" + target.encode())).run(
            {"x": np.zeros((1, 3, 16, 16), np.float32)})
    named = tmp_path / "läti"
    named.mkdir()
    shutil.copy(tiny_conv, named / "mé.onnx")
    env = {**os.environ, "LC_ALL": "POSIX", "LANG": "C", "PYTHONUTF8": "0"}
    proc = subprocess.run([sys.executable, "-m", "deploycomp", "build", str(named / "mé.onnx"), "--out",
                           str(named / "oé")], capture_output=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "mé.onnx" in (named / "oé" / "report.html").read_text(encoding="utf-8")


def test_a_source_checkout_finds_its_backends_without_an_install(tmp_path):
    """``backends/`` installs as ``deploycomp.backends``; run from the checkout's root, the
    folder ``deploycomp/`` shadows any installed copy, and with a non-editable install
    (a benchmark run from the root) every build failed: "No module named
    'deploycomp.backends'". Here with no site-packages at all (``-S``)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if not (root / "setup.py").is_file():  # (.ci/run's floors stage runs a copy of the tests beside the wheel)
        pytest.skip("the tests run outside a source checkout: no checkout to import from")
    code = (f"import sys; sys.path.insert(0, {str(root)!r}); import deploycomp.backends.base as b; "
            "import deploycomp.errors as e; print(b.__file__); print(e.__file__)")
    proc = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    backends, errors = proc.stdout.split()
    assert Path(backends) == root / "backends" / "base.py" and Path(errors) == root / "deploycomp" / "errors.py"
