"""Writing a benchmark's results: JSON after every step (a long run that dies keeps what
it measured) and the Markdown table next to it at the end, both in bench/results/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def save_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str))


def save_table(json_path: Path, table: str) -> None:
    """``table`` beside ``json_path`` as .md, and on stdout."""
    json_path.with_suffix(".md").write_text(table + "\n")
    print(table)
