"""Stage `prepare`: raw corpus -> validated utterance table data/prepared/<dataset>/utterances.parquet.

One row per utterance with the columns of the architecture's contract. The table is
validated by a pandera schema; an invalid row fails the stage with a message naming
the row and the rule it broke, or, with `prepare.on_invalid: quarantine`, is moved to
rejected.csv (with its reasons) while the valid rows go on.
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pandera.pandas as pa

from mmolre import SPLITS, MmolreError
from mmolre.datasets import from_processed, leak_error, overlap_lines, overlap_warning, registry, split_leaks
from mmolre.files import atomic_dir, audio_problem
from mmolre.label_spaces import DEFAULT, LABEL_SPACES, Task, label_columns
from mmolre.params import PrepareParams, build

SECTIONS = ("data", "prepare")  # the params it reads

# pandera's built-in check names, said the way a user reads them
RULE_WORDS = {"field_uniqueness": "must be unique (duplicate id)", "not_nullable": "must not be empty (null)",
              "column_in_dataframe": "column is missing", "column_in_schema": "column is not in the contract"}
BASE_COLUMNS = ["utterance_id", "video_id", "dataset", "split", "start_s", "end_s", "audio_path", "text"]


@dataclass
class Contract:
    """What an utterance table of one dataset holds: its corpora, label space and corpus-specific columns."""
    corpora: tuple[str, ...]
    space: str = DEFAULT
    extra: dict[str, type] = field(default_factory=dict)
    media: bool = True  # rows point at recordings (audio_path) and carry their text; False: processed features

    @property
    def columns(self) -> list[str]:
        return [*BASE_COLUMNS, *label_columns(self.space), *self.extra]


def dataset_table(params: dict, raw_root: Path) -> tuple[pd.DataFrame, list[dict], list[str], Contract, str]:
    """The rows of every corpus of data.dataset (its module in mmolre/datasets/), the rows that failed a
    cross-check, the count report, the table's contract, and who made the split (release, user or mmolre).
    Label columns a corpus does not fill are NaN."""
    name = params["data"]["dataset"]
    contract = Contract(registry.load(name).CORPORA, registry.label_space(params),
                        registry.extra_columns(params, raw_root), media=not from_processed(params, raw_root))
    corpora = registry.source(params, raw_root).tables(params, raw_root / name, raw_root)
    tables = [c.table for c in corpora if len(c.table)]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=contract.columns)
    # a text column no corpus filled is all NaN, a float column to pandas: cast, so that it is NaN of str
    text_columns = {column: "str" for column, kind in contract.extra.items() if kind is str}
    made = {c.split_from for c in corpora}
    return (table.reindex(columns=contract.columns).astype(text_columns), [v for c in corpora for v in c.invalid],
            [line for c in corpora for line in c.report], contract, "release" if made <= {"release"} else
            min(made - {"release"}))


def split_overlap(table: pd.DataFrame, dataset: str, split_from: str, policy: str) -> list[str]:
    """counts.txt lines for videos in several splits: a release's split is kept and reported (one warning line);
    a split the user or mmolre made is refused unless `policy` (prepare.split_overlap) is warn."""
    leaks = split_leaks(table.video_id, table.split)
    if not leaks:
        return []
    if split_from != "release" and policy == "refuse":
        raise leak_error(f"{dataset}'s utterance table", leaks)
    whose = "this release's split" if split_from == "release" else f"the split {split_from_name(split_from)}"
    print(overlap_warning("prepare", leaks, whose))
    return overlap_lines(table.video_id, table.split, whose)


def split_from_name(split_from: str) -> str:
    return {"user": "you made (kept: prepare.split_overlap=warn)",
            "mmolre": "mmolre made (kept: prepare.split_overlap=warn)"}[split_from]


def label_checks(task: Task) -> dict[str, pa.Column]:
    """The columns of one task's labels and their rules."""
    if task.kind == "classes" and task.values:
        return {"sentiment": pa.Column(float, pa.Check.isin(list(task.values), error=f"must be one of "
                                       f"{list(task.values)} ({', '.join(task.labels)})"), nullable=True)}
    if task.kind == "classes":
        return {"emotion": pa.Column(str, pa.Check.isin(list(task.labels), error=f"must be one of "
                                     f"{list(task.labels)}"), nullable=True)}
    rule = pa.Check.in_range(task.low, task.high, error=f"must lie in [{task.low:g}, {task.high:g}]")
    return {column: pa.Column(float, rule, nullable=True) for column in task.labels}


def utterance_schema(raw_root: Path, contract: Contract) -> pa.DataFrameSchema:
    """The utterance-table contract; `raw_root` is where audio_path is resolved."""
    corpora = contract.corpora
    labels = {column: check for task in LABEL_SPACES[contract.space].values()
              for column, check in label_checks(task).items()}
    problem = functools.cache(lambda path: audio_problem(raw_root / path))  # one header read per file (MOSEI
    # shares each video's WAV among its segments)
    readable = pa.Check(lambda paths: paths.map(problem) != "unreadable", error="audio file missing or unreadable")
    whole = pa.Check(lambda paths: paths.map(problem) != "truncated",
                     error="audio file truncated (its header promises more samples than it holds)")
    return pa.DataFrameSchema(
        {
            "utterance_id": pa.Column(str, unique=True, report_duplicates="all"),
            "video_id": pa.Column(str, pa.Check.str_length(min_value=1, error="must be non-empty")),
            "dataset": pa.Column(str, pa.Check.isin(list(corpora), error=f"must be one of {list(corpora)}")),
            "split": pa.Column(str, pa.Check.isin(list(SPLITS), error=f"must be one of {list(SPLITS)}")),
            "start_s": pa.Column(float, pa.Check.ge(0, error="must be >= 0")),
            "end_s": pa.Column(float, nullable=True),
            "audio_path": pa.Column(str, [readable, whole]) if contract.media else pa.Column(object, nullable=True),
            "text": pa.Column(str, [pa.Check.str_length(min_value=1, error="must be non-empty"),
                                    pa.Check(lambda s: s == s.str.strip(), error="must be stripped")],
                              nullable=not contract.media),
            **labels,
            **{column: pa.Column(kind, nullable=True) for column, kind in contract.extra.items()},
        },
        checks=[
            pa.Check(lambda df: df.end_s.isna() | (df.end_s > df.start_s), error="end_s must be > start_s"),
            pa.Check(lambda df: pd.Series([u.startswith(f"{v}_") for u, v in zip(df.utterance_id, df.video_id)],
                                          index=df.index),
                     error="utterance_id must be <video_id>_<clip>"),
        ],
        strict=True,
        ordered=True,
    )


def find_violations(table: pd.DataFrame, raw_root: Path, contract: Contract, extra: list[dict] = ()
                    ) -> pd.DataFrame:
    """One row per (table row, broken rule): columns row, utterance_id, column, rule, value.
    `extra`: broken cross-checks found while reading the corpus (utterance_id, column, rule, value)."""
    row_of = {u: i for i, u in enumerate(table.utterance_id)}
    rows = [{**v, "row": row_of[v["utterance_id"]]} for v in extra]
    try:
        utterance_schema(raw_root, contract).validate(table, lazy=True)
        cases = pd.DataFrame(columns=["index", "schema_context", "column", "check", "failure_case"])
    except pa.errors.SchemaErrors as err:
        cases = err.failure_cases
    if not rows and cases.empty:
        return pd.DataFrame(columns=["row", "utterance_id", "column", "rule", "value"])
    for case in cases.itertuples(index=False):
        index = None if pd.isna(case.index) else int(case.index)
        row_rule = case.schema_context == "DataFrameSchema"  # reported once per row, not per column
        rows.append({"row": index, "column": "(row)" if row_rule else str(case.column), "rule": RULE_WORDS.get(str(case.check), str(case.check)),
                     "value": None if row_rule else case.failure_case,
                     "utterance_id": table.utterance_id.iloc[index] if index is not None else None})
    found = pd.DataFrame(rows).drop_duplicates(["row", "column", "rule"])
    return found.sort_values("row", na_position="first", kind="stable").reset_index(drop=True)


def describe(violations: pd.DataFrame, limit: int = 50) -> str:
    lines = []
    for v in violations.head(limit).itertuples(index=False):
        where = "table" if pd.isna(v.row) else f"row {int(v.row)} (utterance_id={v.utterance_id!r})"
        value = "" if v.value is None or (isinstance(v.value, float) and pd.isna(v.value)) else f" (got {v.value!r})"
        lines.append(f"  {where}: {v.column}: {v.rule}{value}")
    if len(violations) > limit:
        lines.append(f"  ... and {len(violations) - limit} more")
    return "\n".join(lines)


def prepare(params: dict, raw_root: Path, out_root: Path) -> Path:
    """Build, validate and write the utterance table; returns the output folder."""
    cfg = build(PrepareParams, params, "prepare")
    dataset = params["data"]["dataset"]
    if not (raw_root / dataset).is_dir():
        raise MmolreError(f"{raw_root / dataset} does not exist: run `mmolre download` first")
    table, invalid, counts_report, contract, split_from = dataset_table(params, raw_root)
    for line in counts_report:
        print(f"prepare: {line}")
    counts_report += split_overlap(table, dataset, split_from, cfg.split_overlap)
    violations = find_violations(table, raw_root, contract, invalid)
    bad_rows = sorted({int(r) for r in violations.row.dropna()})
    if len(violations) and (cfg.on_invalid == "fail" or violations.row.isna().any()):
        raise MmolreError(f"{len(violations)} rule(s) broken in the utterance table of {dataset} "
                          f"({len(bad_rows)} row(s)); fix the raw data or set prepare.on_invalid=quarantine:\n"
                          + describe(violations))
    valid = table.drop(index=bad_rows).reset_index(drop=True)
    if valid.empty:
        raise MmolreError(f"no valid utterances left in {dataset}:\n" + describe(violations))
    with atomic_dir(out_root / dataset) as tmp:
        write_table(valid, tmp / "utterances.parquet", contract.space)
        if counts_report:
            (tmp / "counts.txt").write_text("\n".join(counts_report) + "\n")
        if bad_rows:
            reasons = violations.groupby("row").apply(
                lambda g: "; ".join(f"{c}: {r}" for c, r in zip(g.column, g.rule)), include_groups=False)
            rejected = table.loc[bad_rows].assign(reasons=reasons.reindex(bad_rows).values)
            rejected.to_csv(tmp / "rejected.csv", index=False)
    counts = valid.split.value_counts().reindex(list(SPLITS), fill_value=0).to_dict()
    note = f"; {len(bad_rows)} row(s) quarantined to rejected.csv" if bad_rows else ""
    print(f"prepare: {dataset}: {len(valid)} utterances {counts}{note}")
    return out_root / dataset


def write_table(table: pd.DataFrame, path: Path, space: str) -> None:
    """The utterance table as parquet; a label space other than the default is named in its pandas attrs
    (`label_space`, read back by pd.read_parquet), so tables written before label spaces existed read as
    what they are."""
    table.attrs = {"label_space": space} if space != DEFAULT else {}
    table.to_parquet(path, index=False)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--raw-root", type=Path, default=Path("data/raw"))
    parser.add_argument("--out-root", type=Path, default=Path("data/prepared"))


def run(args: argparse.Namespace, params: dict) -> None:
    prepare(params, args.raw_root, args.out_root)


if __name__ == "__main__":
    from mmolre.cli import run_stage

    run_stage("prepare")
