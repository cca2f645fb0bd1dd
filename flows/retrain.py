"""Scheduled retraining: rerun the pipeline when something changed and promote a better model.

    python -m flows.retrain [--force] [--set train.lr=0.0003] [--metric demo.msa.mae] [--margin 0.01]

1. `dvc status`: when nothing changed (and not --force), skip.
2. `dvc repro` (or `dvc exp run -S ...` with --set), its output streamed into the run log;
   a failing stage fails the flow with the stage's error.
3. `dvc metrics diff` against the accepted model's revision (git tag `promote.tag`).
4. The promotion rule of params `promote` (metric, min/max, margin): when the new model is better
   by at least the margin (or none was accepted yet), the pipeline's tracked files are committed
   and the tag moves to that commit. Otherwise the accepted model is kept.
5. Artifacts: the metric diff (markdown) and the per-emotion scores (table).
Ends with one summary line: `retrain: skipped ...`, or `retrain: trained, promoted|kept ...`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

import yaml
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.pipeline import run_dvc
from mmolre import EMOTIONS
from mmolre.metrics import flatten
from mmolre.report import accepted_metrics

# What a promotion commits: the pipeline's git-tracked state (outputs that DVC caches are in dvc.lock).
TRACKED = ["dvc.lock", "params.yaml", "reports"]


def last_json(output: str):
    """The JSON a `dvc ... --json` command printed (its last non-empty line; warnings may come before)."""
    lines = [line for line in output.splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else {}


def git(repo: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    for key, value in (("GIT_AUTHOR_NAME", "mmolre retrain"), ("GIT_AUTHOR_EMAIL", "mmolre@localhost")):
        env.setdefault(key, value)
        env.setdefault(key.replace("AUTHOR", "COMMITTER"), value)
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, env=env)


def better_by(new: float, old: float, mode: str) -> float:
    return old - new if mode == "min" else new - old


def diff_markdown(diff: dict, metric: str) -> str:
    rows = [f"| {key} | {v.get('old')} | {v.get('new')} | {v.get('diff')} |" for key, v in sorted(diff.items())]
    return (f"# Metrics against the accepted model\n\nPromotion metric: `{metric}`\n\n"
            "| metric | accepted | new | change |\n|---|---|---|---|\n" + "\n".join(rows or ["| (no change) | | | |"]))


@flow(name="mmolre-retrain")
def retrain(repo: str = ".", targets: list[str] | None = None, force: bool = False,
            set_params: list[str] | None = None, metric: str | None = None, margin: float | None = None) -> dict:
    logger = get_run_logger()
    targets, set_params = targets or [], set_params or []
    rule = yaml.safe_load((Path(repo) / "params.yaml").read_text())["promote"]
    metric = metric or rule["metric"]
    margin = rule["margin"] if margin is None else margin
    changed = last_json(run_dvc(["status", "--json", *targets], repo))
    if not (changed or force or set_params):
        summary = {"trained": False, "line": "retrain: skipped (nothing changed since the last run)"}
        logger.info(summary["line"])
        return summary
    if set_params:
        run_dvc(["exp", "run", *[a for p in set_params for a in ("-S", p)], *targets], repo)
    else:
        run_dvc(["repro", *targets, *(["--force"] if force else [])], repo)

    metrics = json.loads((Path(repo) / "reports" / "metrics.json").read_text())
    new = flatten(metrics)
    if metric not in new:
        raise KeyError(f"promote.metric {metric!r} is not in reports/metrics.json; it has {sorted(new)}")
    accepted = accepted_metrics(rule["tag"], repo)
    old = flatten(accepted) if accepted is not None else None
    diff = last_json(run_dvc(["metrics", "diff", rule["tag"], "--json"], repo)) if old else {}
    diff = diff.get("reports/metrics.json", {})
    create_markdown_artifact(diff_markdown(diff, metric), key="mmolre-metrics-diff",
                             description=f"reports/metrics.json against git tag {rule['tag']}")
    for dataset, block in metrics.items():
        if "mer" in block:
            create_table_artifact([{"emotion": e, **block["mer"][e]} for e in (*EMOTIONS, "avg")],
                                  key=f"mmolre-emotion-scores-{dataset}", description=f"{dataset} emotion WA and F1")

    gain = None if old is None or old.get(metric) is None else better_by(new[metric], old[metric], rule["mode"])
    promote = gain is None or (gain > 0 and gain >= margin)
    change = f"{metric} {new[metric]:.4g}" if gain is None else f"{metric} {old[metric]:.4g} -> {new[metric]:.4g}"
    if promote:
        git(repo, "add", "--", *[p for p in TRACKED if (Path(repo) / p).exists()])
        committed = git(repo, "commit", "-m", f"mmolre retrain: promote model ({change})")
        if committed.returncode != 0 and "nothing to commit" not in committed.stdout:
            raise RuntimeError(f"git commit failed: {committed.stderr or committed.stdout}")
        git(repo, "tag", "-f", rule["tag"])
        line = f"retrain: trained, promoted ({change}; tag {rule['tag']} -> {git(repo, 'rev-parse', '--short', 'HEAD').stdout.strip()})"
    else:
        line = f"retrain: trained, kept the accepted model ({change}; needs {rule['mode']} by >= {margin})"
    logger.info(line)
    return {"trained": True, "promoted": promote, "metric": metric, "new": new[metric],
            "accepted": None if old is None else old.get(metric), "diff": diff, "line": line}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=".")
    parser.add_argument("--force", action="store_true", help="retrain even when nothing changed")
    parser.add_argument("--set", dest="set_params", action="append", default=[], metavar="KEY=VALUE",
                        help="run as `dvc exp run -S KEY=VALUE` (repeatable)")
    parser.add_argument("--target", dest="targets", action="append", default=[], help="dvc stages to reproduce")
    parser.add_argument("--metric", help="promotion metric (default: params promote.metric)")
    parser.add_argument("--margin", type=float, help="promotion margin (default: params promote.margin)")
    args = parser.parse_args()
    summary = retrain(args.repo, args.targets, args.force, args.set_params, args.metric, args.margin)
    print(summary["line"])


if __name__ == "__main__":
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    main()
