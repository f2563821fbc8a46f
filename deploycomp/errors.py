"""The errors a user can cause, each printed by the CLI as one line naming the problem.

Every class maps to a documented exit code, so CI scripts can tell a bad model from a
missed budget without parsing text. Anything else escaping the pipeline is a bug in
deploycomp and exits 1 with a traceback under ``-v`` -- except the machine's own
failures (a folder that cannot be written, a busy path, a full disk, memory), which are
:class:`EnvironmentProblem` (10), and an interrupt (Ctrl-C: 130, SIGTERM: 143).

=====  ==============================================================
code   meaning
=====  ==============================================================
0      ok
1      internal error: a bug in deploycomp (rerun with -v, report it)
2      usage or generic error
3      bad model file (:class:`ModelError`)
4      bad --input shapes, calibration or validation data (:class:`InputDataError`)
5      unknown target or bad profile (:class:`ProfileError`)
6      an op or precision the target cannot do (:class:`UnsupportedError`)
7      backend SDK or device missing (:class:`BackendUnavailable`)
8      a budget was missed (:class:`BudgetError`)
9      output exists, or is not a bundle --force may replace (:class:`OutputExistsError`)
10     the environment: permission denied, busy path, disk full, out of memory
11     a bundle failed verification (:class:`VerificationError`)
12     ``deploycomp diff``: NEW regressed against OLD (:class:`RegressionError`)
13     ``deploycomp fleet``: it ran, and a build failed or missed a budget (``index.json`` says which)
130    interrupted (Ctrl-C); 143 terminated (SIGTERM); 141 stdout's reader went away
=====  ==============================================================
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailable",
    "BudgetError",
    "DeployError",
    "EnvironmentProblem",
    "InputDataError",
    "ModelError",
    "OutputExistsError",
    "RegressionError",
    "ProfileError",
    "UnsupportedError",
    "VerificationError",
    "environment_problem",
    "few",
    "node_label",
    "onnxruntime_message",
    "onnxruntime_run_error",
    "runtime_message",
]

import errno as _errno
import re as _re


class DeployError(Exception):
    """Base class: the message is one line and says what to fix."""

    exit_code = 2


class ModelError(DeployError):
    """The ONNX file is unreadable, corrupt, unsafe or malformed."""

    exit_code = 3


class InputDataError(DeployError):
    """--input shapes, calibration or validation data are wrong."""

    exit_code = 4


class ProfileError(DeployError):
    """Unknown target or a profile that fails its schema."""

    exit_code = 5


class UnsupportedError(DeployError):
    """The model needs something the target or backend cannot do."""

    exit_code = 6


class BackendUnavailable(UnsupportedError):
    """The backend's SDK is not installed or the device is absent."""

    exit_code = 7


class BudgetError(DeployError):
    """The build succeeded but missed one of the target's budgets."""

    exit_code = 8


class OutputExistsError(DeployError):
    """The output directory exists and --force was not given."""

    exit_code = 9


class EnvironmentProblem(DeployError):
    """The machine refused: permission denied, a busy or read-only path, disk full, memory.

    Not the user's model or data and not a bug: a CI job can retry elsewhere."""

    exit_code = 10


class VerificationError(DeployError):
    """A bundle's files do not match its manifest, or its signature does not verify."""

    exit_code = 11


class RegressionError(DeployError):
    """``deploycomp diff``: NEW is worse than OLD past a ``--max-regression`` threshold,
    misses its own budgets, or (fleets) has an entry that failed to build."""

    exit_code = 12


ENVIRONMENT_ERRNOS = frozenset({
    _errno.EACCES, _errno.EPERM, _errno.EROFS, _errno.EBUSY, _errno.ENOSPC, _errno.EDQUOT, _errno.EMFILE,
    _errno.ENFILE, _errno.EIO, _errno.ENOMEM, _errno.ETXTBSY, _errno.EFBIG,  # (ulimit -f)
})
"""errno values that mean the machine, not deploycomp or its input, stopped a build."""


_OUT_OF_MEMORY = _re.compile(r"Failed to allocate memory|std::bad_alloc|\bbad_alloc\b|Cannot allocate memory")
"""How the native runtimes say an allocation failed (ONNX Runtime's BFCArena, C++'s
``std::bad_alloc``, ``ENOMEM`` in a message): under ``ulimit -v`` a host fp16 build of
PP-OCRv4 det read "internal error (Fail): [ONNXRuntimeError] : 1 : FAIL : ...
Failed to allocate memory"."""


_NO_THREAD = _re.compile(r"can't start new thread|cannot start new thread")
"""Python's words when the kernel refuses a thread (each takes a stack of address space
and a process slot): under ``ulimit -v 2G`` a host fp16 build of U^2-Net-p stopped so in
its range check's worker pool and read "internal error (RuntimeError)"."""


def out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` says memory ran out (Python's MemoryError, or a native runtime's words)."""
    return isinstance(e, MemoryError) or bool(_OUT_OF_MEMORY.search(str(e)))


def environment_problem(e: BaseException) -> EnvironmentProblem | None:
    """``e`` as a one-line :class:`EnvironmentProblem`, or None if it is not one."""
    if isinstance(e, EnvironmentProblem):
        return e
    if out_of_memory(e):
        return EnvironmentProblem("out of memory (the build needs more RAM than this machine could give)")
    if isinstance(e, RuntimeError) and _NO_THREAD.search(str(e)):
        return EnvironmentProblem("could not start a thread: the machine's memory or process limits (ulimit -v or "
                                  "-u, a container's memory or pids limit) are below what the build needs")
    if isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS:
        where = f": {e.filename}" if e.filename else ""
        if not e.filename and e.errno in (_errno.ENOSPC, _errno.EDQUOT):
            # (a write to an open file names none: a full $TMPDIR read as if --out were full)
            import tempfile

            try:
                where = f" (writing the output, or the temporary folder {tempfile.gettempdir()})"
            except OSError:
                where = " (writing the output, or the temporary folder)"
        return EnvironmentProblem(f"{e.strerror or _errno.errorcode.get(e.errno, 'OS error')}{where}")
    return None


def few(items, limit: int = 3) -> str:
    """The first ``limit`` of ``items`` and how many there are, so an error line stays one
    readable line whatever the model (an IR 3 ResNet has 269 initializer inputs)."""
    items = [str(i) for i in items]
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} and {len(items) - limit} more ({len(items)} in all)"


_MADE_UP_NODE = _re.compile(r"node(_[A-Za-z]\w*)?_\d+")
_MADE_UP_VALUE = _re.compile(r"val_\d+")


def node_label(name: str, op: str = "", output: str = "") -> str:
    """How an error names a node so the user can find it in their own file.

    Its name, unless onnx-ir made one up (``node_Conv_105``: a node a rewrite created, a
    Conv folded with its BatchNorm, or one the file left unnamed): then the op and the
    tensor it writes, which keeps the file's name through the rewrites (PP-OCRv5 det: 64
    of its 170 optimized nodes are named so, and their outputs are the file's)."""
    made_up = not name or name == "node" or _MADE_UP_NODE.fullmatch(name)  # ('node': a file's unnamed ones)
    if not made_up or not output or _MADE_UP_VALUE.fullmatch(output):
        return f"node '{name}'" if name else f"an unnamed {op or 'node'}"
    return f"the {op or 'node'} writing '{output}'"


_SOURCE_LOCATION = _re.compile(r"^(Exception from \S+:\d+:?|Check '.*' failed at \S+:\d+:?)$")
"""OpenVINO's lines that only say where in its sources an error was raised."""


def runtime_message(e: BaseException, limit: int = 240) -> str:
    """A runtime's error (OpenVINO's, ONNX Runtime's) as one line, at most ``limit``
    characters, for a one-line message of our own: its last line that says something, past
    OpenVINO's source locations ("Exception from src/inference/src/cpp/infer_request.cpp:224:"
    had been all a --profile refusal said, the cause four lines below), else its first; the
    exception's type where it says nothing."""
    lines = [ln.strip() for ln in onnxruntime_message(e).splitlines() if ln.strip()]
    said = [ln for ln in lines if not _SOURCE_LOCATION.match(ln)]
    if said and len(said) < len(lines):  # (OpenVINO's: the cause is its last line)
        return said[-1][:limit]
    return (lines or [type(e).__name__])[0][:limit]


def onnxruntime_message(e: BaseException) -> str:
    """ONNX Runtime's error text without its code prefix ("[ONNXRuntimeError] : 2 :
    INVALID_ARGUMENT : ")."""
    return _re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", str(e).strip())


def onnxruntime_run_error(e: BaseException) -> str:
    """ONNX Runtime's run error in one line: the op, the node and its message, without the
    code prefix and the C++ source location ("Reshape node 'node_view_14': input_shape_size
    == requested_shape_size was false. ... Input shape:{1,30}, requested shape:{1,1,1,24}")."""
    text = " ".join(onnxruntime_message(e).split())
    text = _re.sub(r"/onnxruntime_src/\S+:\d+ (?:[\w:~<>]+\([^)]*\) )?", "", text)
    node = _re.search(r"running (?P<op>\w+) node\. Name:'(?P<name>[^']*)' Status Message: (?P<why>.*)", text)
    return (f"{node['op']} node '{node['name']}': {node['why']}" if node else text)[:400]
