"""Read params.yaml, apply `--set key=value` overrides, and build typed stage configs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml

from mmolre import MmolreError

T = TypeVar("T")


def load_params(path: str | Path = "params.yaml", overrides: Iterable[str] = ()) -> dict:
    """The parameters of `path` with each `section.key=value` override applied (value parsed as YAML)."""
    path = Path(path)
    if not path.is_file():
        raise MmolreError(f"{path}: no such params file (run from the project root or pass --params)")
    params = yaml.safe_load(path.read_text()) or {}
    for item in overrides:
        set_param(params, item)
    return params


def set_param(params: dict, assignment: str) -> None:
    """Apply one `a.b.c=value` assignment in place; the key must already exist."""
    key, sep, raw = assignment.partition("=")
    if not sep:
        raise MmolreError(f"--set {assignment!r}: expected key=value, e.g. train.lr=0.0005")
    *parents, leaf = key.strip().split(".")
    node = params
    for i, part in enumerate(parents):
        if not isinstance(node.get(part), dict):
            raise MmolreError(f"--set {assignment!r}: no section {'.'.join(parents[: i + 1])!r} in params")
        node = node[part]
    if leaf not in node:
        raise MmolreError(f"--set {assignment!r}: unknown key; {'.'.join(parents) or 'top level'} has {sorted(node)}")
    node[leaf] = yaml.safe_load(raw)


def build(cls: type[T], params: dict, name: str) -> T:
    """Build dataclass `cls` from section `name` of params, naming unknown or missing keys."""
    values = params.get(name)
    if not isinstance(values, dict):
        raise MmolreError(f"params: section {name!r} is missing")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise MmolreError(f"params: {name}.{unknown[0]} is not a known key; {name} takes {sorted(fields)}")
    try:
        return cls(**values)
    except TypeError as e:
        raise MmolreError(f"params: section {name!r}: {e}") from None


def params_hash(*sections: Any) -> str:
    """A short stable hash of JSON-serialisable parameter values."""
    blob = json.dumps(sections, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
