"""House rules that a review would otherwise have to check by eye (DEVELOPERS.md: small functions, one name
per thing)."""

import ast

from conftest import ROOT

LONGEST = 40  # lines, docstring included; a longer function says why in a `# long: <reason>` comment above it


def functions(path):
    tree = ast.parse(path.read_text())
    lines = path.read_text().splitlines()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            yield node, lines[first - 2] if first > 1 else ""


def test_no_function_in_mmolre_is_longer_than_40_lines_without_a_reason():
    long = [f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in sorted((ROOT / "mmolre").rglob("*.py")) for node, above in functions(path)
            if node.end_lineno - node.lineno + 1 > LONGEST and "# long:" not in above]
    assert long == []


def test_mmolre_gives_no_second_name_to_its_own_things():
    renamed = [f"{path.relative_to(ROOT)}:{node.lineno} {alias.name} as {alias.asname}"
               for path in sorted((ROOT / "mmolre").rglob("*.py")) for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mmolre")
               for alias in node.names if alias.asname]
    assert renamed == []


def module_name(path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def named_modules(node, sources: dict[str, str]) -> set[str]:
    """The project modules an expression names for importlib: a string that is a module's name, or an f-string
    that starts with a package's dotted name (f"mmolre.baselines.{arch}": every module under it)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in sources:
        return {node.value}
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        prefix = str(node.values[0].value)
        if prefix.startswith(("mmolre.", "flows.")) and prefix.endswith("."):
            return {m for m in sources if m.startswith(prefix)}
    return set()


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """module -> the project modules it imports: those its import statements name (at any depth in the file;
    `from a import b` names a.b when that is a module, and a package's __init__ when it is not), and those it
    names as strings, as importlib loads them (`named_modules`)."""
    graph = {}
    for module, text in sources.items():
        edges = set()
        for node in ast.walk(ast.parse(text)):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
                     if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            for name in names:
                while name and name not in sources:
                    name = name.rpartition(".")[0]
                if name and name != module:
                    edges.add(name)
            edges |= named_modules(node, sources) - {module}
        graph[module] = edges
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import circle once, as the path that closes it (depth-first from each module in order)."""
    found, done = [], set()

    def visit(module, path):
        for nxt in sorted(graph[module]):
            if nxt in path:
                circle = path[path.index(nxt):]
                if not any(set(circle) == set(c) for c in found):
                    found.append(circle)
            elif nxt not in done:
                visit(nxt, path + [nxt])
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    return found


def project_sources() -> dict[str, str]:
    return {module_name(p): p.read_text() for folder in ("mmolre", "flows") for p in sorted((ROOT / folder).rglob("*.py"))}


def test_no_import_circle_among_the_projects_modules():
    assert circles(import_graph(project_sources())) == []


def test_the_circle_check_finds_a_circle_added_back():
    sources = project_sources()
    sources["mmolre.model"] += "\n\ndef _back():\n    from mmolre.baselines import baseline_class\n"
    assert any({"mmolre.baselines", "mmolre.model"} <= set(c) for c in circles(import_graph(sources)))
    sources = project_sources()
    sources["mmolre.datasets"] += "\nfrom mmolre.params import DataParams\n"
    assert any({"mmolre.datasets", "mmolre.params"} <= set(c) for c in circles(import_graph(sources)))


def test_the_circle_check_sees_imports_by_name():
    sources = project_sources()
    graph = import_graph(sources)
    assert "mmolre.datasets.mosei" in graph["mmolre.datasets.registry"]  # f"mmolre.datasets.{name}"
    assert "mmolre.datasets.processed" in graph["mmolre.datasets.registry"]  # "mmolre.datasets.processed"
    assert "mmolre.baselines.fusion_tfn" in graph["mmolre.baselines"]
    # the circle of issue #42, by name: a dataset module that reached back to the registry
    sources["mmolre.datasets.mosei"] += "\nfrom mmolre.datasets.registry import load\n"
    assert any({"mmolre.datasets.registry", "mmolre.datasets.mosei"} <= set(c) for c in circles(import_graph(sources)))
    sources = project_sources()
    sources["mmolre.baselines.late_fusion"] += "\nfrom mmolre.baselines import MODULES\n"
    assert ["mmolre.baselines", "mmolre.baselines.late_fusion"] in [sorted(c) for c in circles(import_graph(sources))]
