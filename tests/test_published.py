"""The table the report sets our runs beside is MMSA's file at its commit, cell by cell."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mmolre.published import MMSA_COMMIT, MMSA_ORDER, MMSA_PUBLISHED, MMSA_SOURCE, mmsa_published

STORED = Path(__file__).parent / "data" / "mmsa" / "result-stat-a94e65d.md"  # `git show a94e65d:results/result-stat.md`
SHA256 = "9861a7ca84477a97627c360f8568a9db6dfc06b97360e93cbc67d901d683c388"


def regression_tables(text: str) -> dict[str, dict[str, list[str]]]:
    """{"mosi"|"mosei": {model: cells}} of the file's "## Regression" section."""
    section = text.split("## Regression", 1)[1].split("\n## ", 1)[0]
    out, corpus = {}, None
    for line in section.splitlines():
        if line.startswith("- "):
            corpus = line[2:].strip().lower()
            out[corpus] = {}
        elif line.startswith("|") and not line.startswith("| :") and "Model" not in line:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            out[corpus][cells[0]] = cells[1:]
    return out


def test_the_stored_file_is_mmsas_at_the_named_commit():
    assert hashlib.sha256(STORED.read_bytes()).hexdigest() == SHA256
    assert MMSA_COMMIT.startswith("a94e65d") and "a94e65d" in MMSA_SOURCE


def mismatches(published: dict[str, list[str]], ours: dict[str, tuple]) -> list[str]:
    """Every row and cell where the report's table differs from the file's (rows in the file's order)."""
    out = [] if list(ours) == list(published) else [f"rows {list(ours)} != {list(published)}"]
    for model, cells in published.items():
        *numbers, setting = cells
        row = ours.get(model, ())
        out += [f"{model} {key}: {mine} != {theirs}" for key, mine, theirs in
                zip((*MMSA_ORDER, "setting"), row, [*map(float, numbers), setting.lower()]) if mine != theirs]
        out += [f"{model}: {len(row)} cells, the file {len(cells)}"] if len(row) != len(cells) else []
    return out


@pytest.mark.parametrize("corpus", ["mosi", "mosei"])
def test_every_cell_of_the_table_the_report_uses_equals_mmsas_file(corpus):
    published = regression_tables(STORED.read_text())[corpus]
    assert len(published) == 11 and all(len(cells) == len(MMSA_ORDER) + 1 for cells in published.values())
    assert mismatches(published, MMSA_PUBLISHED[corpus]) == []


def test_a_wrong_cell_or_a_missing_row_is_seen():
    published = regression_tables(STORED.read_text())["mosei"]
    stale = dict(MMSA_PUBLISHED["mosei"])
    stale["mult"] = (81.15, 80.73, *stale["mult"][2:])  # MulT's Has0 F1 before MMSA's F1 fix (81.56 now)
    assert mismatches(published, stale) == ["mult f1_has0: 80.73 != 81.56"]
    del stale["cenet"]
    assert mismatches(published, stale)[0].startswith("rows [")


def test_mae_and_corr_are_plain_numbers_in_mmolres_names():
    mosei = mmsa_published("mosei")
    assert mosei["self_mm"]["mae"] == pytest.approx(0.5309) and mosei["cenet"]["corr"] == pytest.approx(0.7775)
    assert mosei["tetfn"]["file"] == "aligned_50.pkl" and len(mosei) == 11
