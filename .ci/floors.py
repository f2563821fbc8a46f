"""Print pip pins for the dependency floors pyproject.toml declares: each ``>=`` requirement
of the package and of its ``tflite`` and ``sign`` extras pinned to its floor's release
series (``onnx>=1.21`` -> ``onnx==1.21.*``), for .ci/run's floors stage.

numpy is pinned to 2.0 instead of its floor: the suite's ONNX node test cases (onnx's own)
need numpy 2; deploycomp's commands themselves ran on numpy 1.24 (docs/corpus.md).
"""

import re
import sys
import tomllib

OVERRIDE = {"numpy": "2.0.*"}

with open(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml", "rb") as f:
    project = tomllib.load(f)["project"]
requirements = project["dependencies"] + [r for extra in ("tflite", "sign")
                                          for r in project["optional-dependencies"][extra]]
for requirement in requirements:
    found = re.match(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.]*)", requirement)
    if found:
        name, floor = found.groups()
        print(f"{name}=={OVERRIDE.get(name, floor + '.*')}")
