"""Reading a user's YAML mapping (a target profile, a fleet spec, a preprocessing spec).

One place for the one-line errors every such file gets: missing, unreadable, not YAML,
not a mapping, each naming the file and raised as the caller's error class (so each
keeps its documented exit code). libyaml's safe loader is used where PyYAML has it (5x
faster: ``deploycomp targets`` reads every profile at start-up).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def read_mapping(path: Path, error: type[Exception], what: str, shape: str = "a YAML mapping") -> dict[str, Any]:
    import yaml

    try:
        data = yaml.load(Path(path).read_text(), Loader=_unique_keys_loader())
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except OSError as e:
        raise error(f"{path}: cannot read the {what} ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: a {what} must be {shape}")
    return data
