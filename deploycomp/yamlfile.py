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


def read_mapping(path: Path, error: type[Exception], what: str, shape: str = "a YAML mapping") -> dict[str, Any]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(Path(path).read_text(), Loader=loader)
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except OSError as e:
        raise error(f"{path}: cannot read the {what} ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: a {what} must be {shape}")
    return data
