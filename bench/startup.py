"""How fast the tool itself starts: ``deploycomp --help``, ``--version``, ``targets``.

CI jobs and provisioning scripts call deploycomp many times; each call used to pay for
importing ONNX, onnx-ir and the pipeline (3.7-5 s) before doing anything. The aim is
under 0.5 s for these three. Each command runs ``--runs`` times as a fresh process (the
way a script calls it); the table gives median and worst wall time, and the CPU load of
other processes meanwhile (``bench/timing.py``'s meter), so a run on a busy machine shows
as such.

Usage: python bench/startup.py [--runs 15] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import cpu_snapshot, other_load  # noqa: E402

COMMANDS = {"--help": ["--help"], "--version": ["--version"], "targets": ["targets"], "targets show jetson":
            ["targets", "show", "jetson"]}
AIM_S = 0.5


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    exe = [sys.executable, "-m", "deploycomp"]
    rows = {}
    for name, argv in COMMANDS.items():
        subprocess.run(exe + argv, capture_output=True, check=True)  # warm the page cache
        before = cpu_snapshot()
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            subprocess.run(exe + argv, capture_output=True, check=True)
            times.append(time.perf_counter() - t)
        rows[name] = {"median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3),
                      "other_load": round(other_load(before, cpu_snapshot()), 2)}
    print(f"| command | median | worst | aim | other CPU load |\n|---|---|---|---|---|")
    for name, r in rows.items():
        verdict = "met" if r["median_s"] < AIM_S else "MISSED"
        print(f"| deploycomp {name} | {r['median_s']:.3f} s | {r['max_s']:.3f} s | < {AIM_S} s ({verdict}) | "
              f"{r['other_load']:.2f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs": args.runs, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
