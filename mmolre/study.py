"""`mmolre study`: a parameter study or a random search as DVC experiments, e.g. the paper's (N shared experts,
rank r_n), or MMSA's tune mode done right (a field model's ranges, chosen on validation):

    mmolre study --grid model.n_experts=1,3,5,10,15,20 --grid model.rank=16,32,64,128,256 --seeds 1111,1,11
    mmolre study --sample 50 --field-ranges tfn --set model.arch=tfn --set runs.main.modalities=[text,audio,video]

--sample N draws N distinct points from the ranges (--grid values, or --field-ranges ARCH: MMSA's tune ranges of
that field model as model.field_settings; each key drawn uniformly and independently, seeded by --seed), named
`<name>-<k>-<digest>`. Whatever the mode, the point is chosen on the valid split alone: runs.main's best-epoch
valid score (--select, from reports/train/main/metrics.json; MAE of a regression, else the loss). A search
reports the test metric of the chosen point once; a grid reports every point's, as a parameter study's figure.

Every point of the grid (the product of the --grid values) is one experiment, named from its values
(`study-n_experts1-rank16`), queued with `dvc exp run --queue -S ...` and run by `dvc queue start --jobs N`
(each in its own temporary copy: the workspace is untouched). A point whose experiment already exists on this
commit is not run again, so a second call only redraws. The study trains `runs.main` alone (the other runs
are left out of its experiments; --all-runs keeps them). Then `dvc exp show --json` gives each point's
reports/metrics.json and reports/costs.json, and reports/study/ gets:
  study.json   every point: its values, experiment, the metric (mean, and std over seeds) and the parameters
  study.md     the same as a table
  study.png    the metric against each grid key (one line per value of the others), parameters on a second axis
The metric is params `promote.metric` (and `promote.mode`) unless --metric names another key of metrics.json.
A --set value is a key of every point with that one value (passed to each experiment and in its name).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import itertools
import json
import math
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from tqdm import tqdm

from mmolre import MmolreError
from mmolre.files import atomic_dir
from mmolre.params import set_param, validate_params
from mmolre.runs import validate_runs

SECTIONS = ("data", "demo", "prepare", "featurize", "model", "train", "promote", "evaluate", "runs")

METRICS, COSTS = "reports/metrics.json", "reports/costs.json"
VALID = "reports/train/main/metrics.json"  # dvclive: runs.main's best epoch, whose valid scores choose the point
SELECT = ("best.valid_mae", "best.valid_loss")  # the default: the first that is a number
FIELD_KEY = "model.field_settings"  # --field-ranges keys sit under it, passed as one dict per point
POLL_S = 3.0


def experiments_of(shown: list) -> dict[str, dict]:
    """experiment name -> its metrics files' data, from `dvc exp show --json` (the baseline's experiments)."""
    out = {}
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                data = (rev.get("data") or {}).get("metrics") or {}
                out[rev.get("name") or experiment.get("name")] = {path: m.get("data") for path, m in data.items()}
    return out


def parse_grid(items: list[str]) -> dict[str, list]:
    """['model.rank=16,32', ...] -> {'model.rank': [16, 32], ...} (values parsed as YAML)."""
    grid = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values.strip():
            raise MmolreError(f"--grid {item!r}: expected key=v1,v2,..., e.g. --grid model.rank=16,32")
        if key in grid:
            raise MmolreError(f"--grid {key} is given twice: list all its values once")
        grid[key] = [yaml.safe_load(v) for v in re.split(r",(?![^\[]*\])", values)]
    return grid


def sample_points(ranges: dict[str, list], n: int, seed: int) -> list[dict]:
    """`n` distinct points, each key drawn uniformly and independently from its values (MMSA's tune mode, but
    seeded); every point when there are no more than `n`."""
    if math.prod(len(v) for v in ranges.values()) <= n:
        return [dict(zip(ranges, values)) for values in itertools.product(*ranges.values())]
    rng, points, seen = random.Random(seed), [], set()
    while len(points) < n:
        point = {key: rng.choice(values) for key, values in ranges.items()}
        if (key := json.dumps(point, sort_keys=True)) not in seen:
            seen.add(key)
            points.append(point)
    return points


def field_ranges(arch: str) -> dict[str, list]:
    """MMSA's tune ranges of a field model, as keys under model.field_settings."""
    from mmolre.field.presets import TUNE

    if arch not in TUNE:
        raise MmolreError(f"--field-ranges {arch}: the field's models are {', '.join(TUNE)}")
    return {f"{FIELD_KEY}.{key}": [list(v) if isinstance(v, tuple) else v for v in values]
            for key, values in TUNE[arch].items()}


def folded(point: dict) -> dict:
    """The point as params keys: the model.field_settings.* keys gathered into one model.field_settings dict."""
    settings = {k.removeprefix(FIELD_KEY + "."): v for k, v in point.items() if k.startswith(FIELD_KEY + ".")}
    rest = {k: v for k, v in point.items() if not k.startswith(FIELD_KEY + ".")}
    return rest | ({FIELD_KEY: settings} if settings else {})


def sample_name(prefix: str, k: int, point: dict) -> str:
    return f"{prefix}-{k:02d}-{hashlib.sha256(json.dumps(point, sort_keys=True).encode()).hexdigest()[:6]}"


def point_name(prefix: str, point: dict, seeds: list[int] | None) -> str:
    """A git-ref-safe experiment name from the point's values (the keys' last parts, unless two collide)."""
    leaves = [key.split(".")[-1] for key in point]
    keys = leaves if len(set(leaves)) == len(leaves) else [key.replace(".", "_") for key in point]
    parts = [f"{k}{v if isinstance(v, str) else json.dumps(v, separators=(',', ':'))}"
             for k, v in zip(keys, point.values())]
    if seeds:
        parts.append("s" + "_".join(map(str, seeds)))
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join([prefix, *parts]))


def overrides(point: dict, seeds: list[int] | None, params: dict, all_runs: bool) -> list[str]:
    """The `dvc exp run -S` values of a point: its grid values, the seeds, the runs left out."""
    values = [f"{key}={json.dumps(value)}" for key, value in folded(point).items()]
    if seeds:
        values.append(f"runs.main.seeds={json.dumps(seeds)}")
    if not all_runs:
        values += [f"~runs.{run}" for run in params.get("runs", {}) if run != "main"]
    return values


def checked_points(params: dict, points: list[dict], seeds: list[int] | None) -> list[dict]:
    """The points, each validated as the params it makes (a bad value: one line, nothing queued)."""
    for point in points:
        values = copy.deepcopy(params)
        for key, value in folded(point).items():
            set_param(values, f"{key}={json.dumps(value)}")
        if seeds:
            values["runs"]["main"]["seeds"] = seeds
        try:
            validate_params(values)
            validate_runs(values)
        except MmolreError as e:
            raise MmolreError(f"grid point {point}: {e}") from None
    return points


def dvc(*args: str) -> str:
    """`dvc <args>` in the project (this Python's dvc); its output, or MmolreError with its last lines.
    Output goes through a file, not a pipe: `dvc queue start` leaves workers behind that inherit it, and a
    pipe would stay open (and this call wait) until they exit."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        code = subprocess.run([sys.executable, "-m", "dvc", *args], stdout=out, stderr=err).returncode
        texts = []
        for stream in (out, err):
            stream.seek(0)
            texts.append(stream.read())
    if code != 0:
        tail = "\n".join("".join(texts).strip().splitlines()[-8:])
        raise MmolreError(f"dvc {' '.join(args[:3])} ... failed:\n{tail}")
    return texts[0]


def queue_states(names: set[str]) -> dict[str, str]:
    """name -> Queued | Running | Success | Failed ..., for the names `dvc queue status` lists."""
    states = {}
    for line in dvc("queue", "status").splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] in names:
            states[fields[1]] = fields[-1]
    return states


def run_queue(names: list[str], jobs: int) -> None:
    """Start `jobs` queue workers and wait for `names`, with a progress bar; fails naming the failed ones."""
    dvc("queue", "start", "--jobs", str(jobs))
    pending = set(names)
    with tqdm(total=len(names), desc="study", unit="point", file=sys.stderr) as bar:
        while True:
            states = queue_states(pending)
            finished = {n for n in pending if states.get(n) not in ("Queued", "Running")}
            bar.update(len(finished))
            pending -= finished
            failed = [n for n in finished if states.get(n) == "Failed"]
            if failed:
                raise MmolreError(f"experiment(s) {', '.join(sorted(failed))} failed: `dvc queue logs <name>` shows "
                                  f"why; fix it and rerun (finished points are kept, failed ones are queued again)")
            if not pending:
                return
            time.sleep(POLL_S)


def dotted(node: dict, key: str):
    """The value at a dotted key of nested dicts, or None."""
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def metric_of(metrics: dict, key: str) -> tuple[float | None, float | None, float | None]:
    """(mean, std, half-width of the 95 % t interval of the mean) of a dotted key of metrics.json (std and
    interval None for one seed)."""
    return dotted(metrics, key), dotted(metrics, f"{key}_std"), dotted(metrics, f"{key}_ci95")


def valid_score(files: dict, select: tuple[str, ...], name: str) -> tuple[str, float]:
    """(key, value): the first of `select` that runs.main's best epoch has as a number in its dvclive file."""
    for key in select:
        value = dotted(files.get(VALID) or {}, key)
        if isinstance(value, (int, float)) and not math.isnan(value):
            return key, float(value)
    raise MmolreError(f"experiment {name}: {VALID} has no number at {' or '.join(select)} (the valid split's "
                      "scores of runs.main's best epoch, which choose the point; --select names another)")


def study_rows(points: dict[str, dict], shown: dict[str, dict], metric: str, select: tuple[str, ...]) -> list[dict]:
    """One row per point: its values, experiment, valid score, test metric (mean, std), main's parameters, FLOPs."""
    rows = []
    for name, point in points.items():
        files = shown[name]
        mean, std, ci95 = metric_of(files.get(METRICS) or {}, metric)
        if mean is None:
            raise MmolreError(f"experiment {name}: {METRICS} has no {metric} (choose --metric among its keys)")
        key, valid = valid_score(files, select, name)
        cost = (files.get(COSTS) or {}).get("main", {})
        rows.append({**point, "experiment": name, "valid": {"key": key, "value": valid}, metric: mean,
                     f"{metric}_std": std, f"{metric}_ci95": ci95, "params": cost.get("params"),
                     "flops_per_utterance": cost.get("flops_per_utterance")})
    return rows


def chosen(rows: list[dict]) -> dict:
    """The point of the best valid score (highest for an F1 or accuracy, else lowest)."""
    higher = any(word in rows[0]["valid"]["key"] for word in ("f1", "acc"))
    return (max if higher else min)(rows, key=lambda r: r["valid"]["value"])


def test_cell(row: dict, metric: str) -> tuple[str, str]:
    """The metric as 'mean ± std' and its 95 % interval of the mean ('–' for one seed)."""
    value = f"{row[metric]:.4g}" + (f" ± {row[f'{metric}_std']:.2g}" if row[f"{metric}_std"] is not None else "")
    half = row.get(f"{metric}_ci95")
    return value, "–" if half is None else f"[{row[metric] - half:.4g}, {row[metric] + half:.4g}]"


def study_table(rows: list[dict], keys: list[str], metric: str, with_test: bool = True) -> str:
    """The points as a markdown table: values, valid score, (the test metric,) parameters, FLOPs, experiment."""
    header = [*keys, "valid"] + ([metric, "95 % CI of the mean"] if with_test else []) + \
        ["params", "GFLOPs/utt", "experiment"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        flops = "–" if row["flops_per_utterance"] is None else f"{row['flops_per_utterance'] / 1e9:.4g}"
        params = "–" if row["params"] is None else f"{row['params']:,}"
        test = list(test_cell(row, metric)) if with_test else []
        lines.append("| " + " | ".join([*(json.dumps(row[k]) if isinstance(row[k], list) else str(row[k])
                                          for k in keys), f"{row['valid']['value']:.4g}", *test, params, flops,
                                        row["experiment"]]) + " |")
    return "\n".join(lines) + "\n"


def plot_study(rows: list[dict], grid: dict, metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in grid if len(grid[k]) > 1] or list(grid)
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        others = [k for k in grid if k != key]
        params_ax = ax.twinx()
        for rest in itertools.product(*(grid[k] for k in others)):
            line = [r for r in rows if all(r[k] == v for k, v in zip(others, rest))]
            label = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(others, rest)) or metric
            std = [r[f"{metric}_std"] or 0.0 for r in line]
            drawn = ax.errorbar([r[key] for r in line], [r[metric] for r in line], yerr=std, marker="o",
                                capsize=3, label=label)
            if all(r["params"] is not None for r in line):
                params_ax.plot([r[key] for r in line], [r["params"] for r in line], ":", alpha=0.6,
                               color=drawn.lines[0].get_color())
        ax.set_xlabel(key); ax.set_ylabel(metric); ax.grid(alpha=0.3); ax.legend(fontsize=7)
        params_ax.set_ylabel("parameters (dotted)")
    fig.tight_layout(); fig.savefig(path, dpi=120); plt.close(fig)


def study_summary(rows: list[dict], metric: str, search: bool) -> tuple[dict, str]:
    """The chosen row and the lines that say how it was chosen and what it scores on the test split."""
    best = chosen(rows)
    value, interval = test_cell(best, metric)
    lines = (f"Chosen on the valid split ({best['valid']['key']} of runs.main's best epoch = "
             f"{best['valid']['value']:.4g}): **{best['experiment']}**.\n\n"
             f"Its test {metric}: {value} (95 % CI of the mean {interval})"
             + (", the only test score this search reports.\n" if search else ".\n"))
    return best, lines


def write_study(out: Path, rows: list[dict], space: dict, metric: str, search: dict | None) -> None:
    """study.json and study.md; a grid also study.png. A search (`search`: its draws and seed) keeps the test
    metric of the chosen point only."""
    best, summary = study_summary(rows, metric, search is not None)
    keys = list(space)
    if search is not None:
        rows = [{k: v for k, v in r.items() if not k.startswith(metric)} for r in rows]
    with atomic_dir(out) as tmp:
        what = {"grid": space} if search is None else {"ranges": space, **search}
        (tmp / "study.json").write_text(json.dumps({"metric": metric, "mode": "grid" if search is None else "sample",
                                                    **what, "chosen": best, "points": rows}, indent=2) + "\n")
        title = f"Study: {metric} over {', '.join(keys)}" if search is None else \
            f"Random search: {search['draws']} points of {', '.join(keys)} (seed {search['seed']})"
        figure = "\n![study](study.png)\n" if search is None else ""
        (tmp / "study.md").write_text(f"# {title}\n\n{summary}\n" + study_table(rows, keys, metric, search is None)
                                      + figure)
        if search is None:
            plot_study(rows, space, metric, tmp / "study.png")


def study(params: dict, space: dict[str, list], seeds: list[int] | None, jobs: int, metric: str, prefix: str,
          out: Path, all_runs: bool, select: tuple[str, ...] = SELECT, search: dict | None = None) -> list[dict]:
    """Queue and run the points not yet on this commit (the grid's, or `search`'s draws from `space`), then write
    `out` from every point."""
    named = named_points(space, seeds, prefix, search)
    points = dict(zip(named, checked_points(params, list(named.values()), seeds)))
    run_points(points, seeds, params, jobs, all_runs)
    rows = study_rows(points, experiments_of(json.loads(dvc("exp", "show", "--json"))), metric, select)
    write_study(out, rows, space, metric, None if search is None else {**search, "draws": len(points)})
    print(f"study: wrote {out}/study.json and study.md{'' if search else ' and study.png'}", file=sys.stderr)
    return rows


def named_points(space: dict[str, list], seeds: list[int] | None, prefix: str, search: dict | None) -> dict[str, dict]:
    """experiment name -> point: every point of the grid, or the search's draws (never the whole product of a
    search's ranges: MMSA's MulT ranges alone hold 2.1 x 10^9 points)."""
    if search is None:
        grid = (dict(zip(space, values)) for values in itertools.product(*space.values()))
        return {point_name(prefix, p, seeds): p for p in grid}
    drawn = sample_points(space, search["draws"], search["seed"])
    return {sample_name(prefix, k, p): p for k, p in enumerate(drawn, start=1)}


def run_points(points: dict[str, dict], seeds, params: dict, jobs: int, all_runs: bool) -> None:
    """Queue the points not run or queued on this commit and wait for every point without metrics."""
    done = {name for name, files in experiments_of(json.loads(dvc("exp", "show", "--json"))).items()
            if files.get(METRICS)}  # a failed experiment has none: it is run again
    queued = queue_states(set(points))
    new = [name for name in points if name not in done and queued.get(name) not in ("Queued", "Running")]
    print(f"study: {len(points)} points, {len(points) - len(new)} already run or queued on this commit, "
          f"{len(new)} to run", file=sys.stderr)
    if any(queued.get(name) == "Failed" for name in new):
        dvc("queue", "remove", "--failed")
    for name in new:
        dvc("exp", "run", "--queue", "-n", name,
            *[a for v in overrides(points[name], seeds, params, all_runs) for a in ("-S", v)])
    waiting = [name for name in points if name not in done]
    if waiting:
        run_queue(waiting, jobs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                        help="a params key and its values (repeatable: the study is their product, or with --sample "
                             "the ranges it draws from)")
    parser.add_argument("--sample", type=int, metavar="N",
                        help="random search: N distinct points drawn from the ranges instead of the whole grid")
    parser.add_argument("--field-ranges", metavar="ARCH", help="add MMSA's tune ranges of a field model (lf_dnn, "
                        "tfn, lmf, mult, misa) as model.field_settings keys to draw from (with --sample)")
    parser.add_argument("--seed", type=int, help="the draws' seed (default: params data.seed)")
    parser.add_argument("--select", help="the valid score that chooses the point, a key of runs.main's dvclive "
                        "metrics (default: best.valid_mae, else best.valid_loss)")
    parser.add_argument("--seeds", help="seeds of every point, e.g. 1111,1,11 (default: runs.main's)")
    parser.add_argument("--jobs", type=int, default=1, help="experiments run at once (`dvc queue start --jobs`)")
    parser.add_argument("--metric", help="the test metric reported, a key of reports/metrics.json (default: params "
                        "promote.metric)")
    parser.add_argument("--name", default="study", help="experiment names start with it (default: study)")
    parser.add_argument("--out", type=Path, default=Path("reports/study"), help="where the study is written")
    parser.add_argument("--all-runs", action="store_true", help="train every run of params `runs` per point")


def run(args: argparse.Namespace, params: dict) -> None:
    if args.jobs < 1:
        raise MmolreError(f"--jobs {args.jobs}: at least 1")
    if args.sample is not None and args.sample < 1:
        raise MmolreError(f"--sample {args.sample}: at least 1 point")
    if args.field_ranges and args.sample is None:
        raise MmolreError("--field-ranges draws from MMSA's ranges: give --sample N (MMSA's tune mode draws 50)")
    try:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    except ValueError:
        raise MmolreError(f"--seeds {args.seeds!r}: integers separated by commas, e.g. 1111,1,11") from None
    metric = args.metric or params.get("promote", {}).get("metric")
    if not metric:
        raise MmolreError("no metric: pass --metric (a key of reports/metrics.json) or set params promote.metric")
    space = parse_grid(args.grid) | (field_ranges(args.field_ranges) if args.field_ranges else {})
    if not space:
        raise MmolreError("nothing to study: give --grid KEY=V1,V2,... (or --sample N --field-ranges ARCH)")
    fixed = {key: [yaml.safe_load(raw)] for key, _, raw in (item.partition("=") for item in args.overrides)}
    search = None if args.sample is None else {"draws": args.sample,
                                              "seed": args.seed if args.seed is not None else params["data"]["seed"]}
    select = (args.select,) if args.select else SELECT
    study(params, fixed | space, seeds, args.jobs, metric, args.name, args.out, args.all_runs, select, search)


if __name__ == "__main__":
    from mmolre.cli import run_stage

    run_stage("study")
