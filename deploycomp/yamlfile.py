"""Reading a user's YAML mapping (a target profile, a fleet spec, a preprocessing spec).

One place for the one-line errors every such file gets: missing, unreadable, not YAML,
not a mapping, each naming the file and raised as the caller's error class (so each
keeps its documented exit code). libyaml's safe loader is used where PyYAML has it (5x
faster: ``deploycomp targets`` reads every profile at start-up).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploycomp.errors import environment_problem
from deploycomp.paths import DEVICE_OR_PIPE, device_or_pipe

__all__ = ["read_mapping"]


def _unique_keys_loader():
    """A YAML safe loader that refuses a key given twice in one mapping: YAML keeps the last,
    and a profile's second ``budgets:`` had silently dropped the first one's limits."""
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class UniqueKeys(base):  # type: ignore[misc, valid-type]
        def construct_mapping(self, node, deep=False):
            keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
            twice = sorted({str(k) for k in keys if keys.count(k) > 1})
            if twice:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {twice[0]!r} given twice in one mapping (YAML would keep the last)",
                    node.start_mark)
            return super().construct_mapping(node, deep)

    return UniqueKeys


MAX_YAML_BYTES = 10_000_000
"""The largest profile, spec or preprocessing file read (a fleet spec of thousands of models
is a few hundred kB)."""


def read_mapping(path: Path, error: type[Exception], what: str, shape: str = "a YAML mapping") -> dict[str, Any]:
    import yaml

    path = Path(path)
    if device_or_pipe(path) or path.is_dir():
        raise error(f"{path}: the {what} is {'a folder' if path.is_dir() else DEVICE_OR_PIPE}")
    if path.is_file() and path.stat().st_size > MAX_YAML_BYTES:
        raise error(f"{path}: {path.stat().st_size / 1e6:.0f} MB is no {what} (at most {MAX_YAML_BYTES // 1000} kB)")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_unique_keys_loader())
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except OSError as e:
        if (env := environment_problem(e)) is not None:  # permission denied, EIO: the machine's (exit 10)
            raise env from None
        raise error(f"{path}: cannot read the {what} ({e.strerror})") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not a text file, so no YAML {what}") from None
    except (yaml.YAMLError, ValueError, RecursionError) as e:  # (a 5000-digit integer: Python's own limit)
        raise error(f"{path}: not valid YAML ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: a {what} must be {shape}")
    return data
