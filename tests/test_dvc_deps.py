"""Each dvc.yaml stage depends on exactly the mmolre modules its command imports (transitively), so an
edit reruns every stage it can change and no other."""

import ast
import copy
from pathlib import Path

import yaml

from conftest import ROOT


def imported_modules(path: Path) -> set[Path]:
    """The mmolre source files `path` imports (at any depth in the file), the package's __init__ included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                 [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
        for name in names:
            if name != "mmolre" and not name.startswith("mmolre."):
                continue
            found.add(ROOT / "mmolre" / "__init__.py")
            if name != "mmolre":
                found.add(ROOT / Path(*name.split(".")).with_suffix(".py"))
            elif isinstance(node, ast.ImportFrom):  # from mmolre import cmu, MmolreError: modules among them
                found |= {ROOT / "mmolre" / f"{a.name}.py" for a in node.names if (ROOT / "mmolre" / f"{a.name}.py").is_file()}
    return found


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
        listed = {d for d in body["deps"] if d.startswith("mmolre/") and d.endswith(".py")}
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
