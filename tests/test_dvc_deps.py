"""Each dvc.yaml stage depends on exactly the mmolre modules its command imports (transitively), so an
edit reruns every stage it can change and no other. A stage that loads datasets through the registry
(`registry.load`) imports every registered dataset module: it lists the mmolre/datasets folder; one that
builds a model (`baseline_class`) may import every baseline: it lists mmolre/baselines."""

import ast
import copy
from pathlib import Path

import yaml

from conftest import ROOT
from mmolre.baselines import MODULES as BASELINES
from mmolre.modalities import MODALITIES
from mmolre.datasets.registry import MODULES as DATASETS, PROCESSED_MODULE


def source_file(name: str) -> Path | None:
    """The file of module `name` (a package's __init__.py), or None when it is not a module."""
    path = ROOT / Path(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def imported_modules(path: Path) -> set[Path]:
    """The mmolre source files `path` imports (at any depth in the file), the packages' __init__ included;
    all registered dataset modules when it loads one through the registry, the modalities' encoder and reader
    modules when it loads them through theirs; the registry's and the processed-features module when it reads
the raw folder through `registry.source`."""
    text = path.read_text()
    found = {source_file(m) for m in DATASETS.values()} if "registry.load(" in text else set()
    found |= ({source_file(m) for m in [*DATASETS.values(), PROCESSED_MODULE]}
              if "registry.source(" in text else set())
    found |= {source_file(m) for m in BASELINES.values()} if "baseline_class(" in text else set()
    found |= ({source_file(getattr(m, what).split(":")[0]) for m in MODALITIES.values() for what in ("encoder", "reader")
               if getattr(m, what)} if '.load("encoder")' in text else set())
    for node in ast.walk(ast.parse(text)):
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                 [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
        for name in names:
            if name != "mmolre" and not name.startswith("mmolre."):
                continue
            parts = name.split(".")
            found |= {source_file(".".join(parts[:k])) for k in range(1, len(parts) + 1)}
            if isinstance(node, ast.ImportFrom):  # from mmolre.datasets import sdk, CorpusTable: modules among them
                found |= {source_file(f"{name}.{a.name}") for a in node.names} - {None}
    return found - {None}


def closure(start: Path) -> set[Path]:
    seen, todo = set(), [start]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo += imported_modules(path)
    return seen


def coverage(dvc: dict) -> dict[str, tuple[set[str], set[str]]]:
    """Stage -> (modules it imports but does not list, modules it lists but does not import)."""
    out = {}
    for name, stage in dvc["stages"].items():
        body = stage.get("do", stage)
        module = ROOT / "mmolre" / f"{body['cmd'].split()[1]}.py"  # `mmolre <stage> ...`
        needed = {p.relative_to(ROOT).as_posix() for p in closure(module) | closure(ROOT / "mmolre" / "cli.py")}
        folders = [d for d in body["deps"] if d.startswith("mmolre/") and (ROOT / d).is_dir() and d != "mmolre/folds"]
        listed = {d for d in body["deps"] if d.startswith("mmolre/") and d.endswith(".py")}
        listed |= {p.relative_to(ROOT).as_posix() for d in folders for p in (ROOT / d).rglob("*.py")}
        out[name] = (needed - listed, listed - needed)
    return out


def test_every_stage_lists_exactly_the_modules_it_imports():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert {stage: gaps for stage, gaps in coverage(dvc).items() if any(gaps)} == {}


def test_a_removed_dep_is_caught():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    broken = copy.deepcopy(dvc)
    broken["stages"]["train"]["do"]["deps"].remove("mmolre/hub.py")
    broken["stages"]["evaluate"]["deps"].append("mmolre/featurize.py")
    gaps = coverage(broken)
    assert gaps["train"] == ({"mmolre/hub.py"}, set())
    assert gaps["evaluate"] == (set(), {"mmolre/featurize.py"})
