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
