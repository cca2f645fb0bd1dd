"""Scheduled retraining: rerun the pipeline when something changed and promote a better model.

    python -m flows.retrain [--force] [--set train.lr=0.0003] [--metric demo.msa.mae] [--margin 0.01]

1. `dvc status`: when nothing changed (and not --force), skip.
2. The candidate runs as a named DVC experiment (`dvc exp run -n retrain-<time> [-S ...]`), its output
   streamed into the run log.
3. `dvc metrics diff` against the accepted revision: git tag `promote.tag`, or, before any promotion,
   the committed HEAD (so a first run never promotes a model worse than the committed baseline).
4. The promotion rule of params `promote` (metric, min/max, margin): when the candidate is better by at
   least the margin (or nothing was accepted or committed yet), the pipeline's tracked files are
   committed and the tag moves to that commit.
5. Otherwise (kept), and when a stage fails, the workspace goes back to the accepted revision: params,
   dvc.lock and reports from git, the DVC outputs (models, features) by `dvc checkout`. The served model
   is always the accepted one; a kept candidate stays inspectable as its experiment
   (`dvc exp show`, `dvc exp apply retrain-<time>`).
6. Artifacts: the metric diff (markdown) and the per-emotion scores (table).
Ends with one line: `retrain: skipped ...`, `retrain: trained, promoted|kept ...`, or
`retrain: failed: <stage>: <reason>` (the flow then fails, and the CLI exits 1).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.pipeline import DvcFailed, run_dvc
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


class RetrainFailed(RuntimeError):
    """A candidate's stage failed; the workspace is back at the accepted revision. str() is the `retrain:` line."""


def accepted_revision(tag: str, repo: str) -> str | None:
    """The revision whose model is served: the promotion tag, else the committed HEAD (None in a repo
    without commits)."""
    for rev in (tag, "HEAD"):
        if git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").returncode == 0:
            return rev
    return None


def restore(repo: str, rev: str | None) -> None:
    """Put params, dvc.lock, reports and the DVC outputs back as they are at `rev`."""
    if rev is None:
        return
    tracked = [p for p in TRACKED if git(repo, "cat-file", "-e", f"{rev}:{p}").returncode == 0]
    if tracked:
        git(repo, "checkout", rev, "--", *tracked)
    git(repo, "clean", "-fdq", "--", "reports")  # files only the candidate wrote
    run_dvc(["checkout", "--force"], repo)  # models, features, ... of that dvc.lock, from the cache


def fail(repo: str, accepted_rev: str | None, line: str) -> None:
    """Put the workspace back at the accepted revision, log the `retrain: failed` line and fail the flow."""
    restore(repo, accepted_rev)
    get_run_logger().error(line)
    raise RetrainFailed(line) from None  # the line says it all; no chained DVC traceback


def failed_stage(error: DvcFailed) -> tuple[str, str]:
    """(stage, reason) from DVC's and the stage's own words in the failure output."""
    text = str(error)
    stage = re.search(r"failed to reproduce '([^']+)'", text)
    reason = re.findall(r"mmolre \S+: error: (.+)", text) or re.findall(r"ERROR: (.+)", text)
    return (stage.group(1) if stage else "dvc"), (reason[-1].strip() if reason else text.splitlines()[0])


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
    accepted_rev = accepted_revision(rule["tag"], repo)
    name = f"retrain-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    try:
        run_dvc(["exp", "run", "-n", name, *[a for p in set_params for a in ("-S", p)],
                 *(["--force"] if force else []), *targets], repo)
    except DvcFailed as e:
        stage, reason = failed_stage(e)
        fail(repo, accepted_rev, f"retrain: failed: {stage}: {reason} (workspace back at "
                                 f"{accepted_rev or 'the last state'})")

    metrics = json.loads((Path(repo) / "reports" / "metrics.json").read_text())
    new = flatten(metrics)
    if metric not in new:
        fail(repo, accepted_rev, f"retrain: failed: promote: promote.metric {metric!r} is not in "
                                 f"reports/metrics.json ({sorted(new)})")
    accepted = accepted_metrics(accepted_rev, repo) if accepted_rev else None
    old = flatten(accepted) if accepted is not None else None
    diff = last_json(run_dvc(["metrics", "diff", accepted_rev, "--json"], repo)) if old else {}
    diff = diff.get("reports/metrics.json", {})
    create_markdown_artifact(diff_markdown(diff, metric), key="mmolre-metrics-diff",
                             description=f"reports/metrics.json against {accepted_rev}")
    for dataset, block in metrics.items():
        if "mer" in block:
            create_table_artifact([{"emotion": e, **block["mer"][e]} for e in (*EMOTIONS, "avg")],
                                  key=f"mmolre-emotion-scores-{dataset}", description=f"{dataset} emotion WA and F1")

    gain = None if old is None or old.get(metric) is None else better_by(new[metric], old[metric], rule["mode"])
    promote = gain is None or (gain > 0 and gain >= margin)
    change = f"{metric} {new[metric]:.4g}" if gain is None else f"{metric} {old[metric]:.4g} -> {new[metric]:.4g}"
    if promote:
        git(repo, "add", "--", *[p for p in TRACKED if (Path(repo) / p).exists()])
        git(repo, "add", "--", ":(glob)**/.gitignore")  # DVC's entries for the outputs it caches
        committed = git(repo, "commit", "-m", f"mmolre retrain: promote model ({change})")
        if committed.returncode != 0 and "nothing to commit" not in committed.stdout:
            raise RuntimeError(f"git commit failed: {committed.stderr or committed.stdout}")
        git(repo, "tag", "-f", rule["tag"])
        line = f"retrain: trained, promoted ({change}; tag {rule['tag']} -> {git(repo, 'rev-parse', '--short', 'HEAD').stdout.strip()})"
    else:
        restore(repo, accepted_rev)
        line = (f"retrain: trained, kept the accepted model ({change}; needs {rule['mode']} by >= {margin}); "
                f"candidate kept as experiment {name}")
    logger.info(line)
    return {"trained": True, "promoted": promote, "metric": metric, "new": new[metric], "experiment": name,
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
    try:
        summary = retrain(args.repo, args.targets, args.force, args.set_params, args.metric, args.margin)
    except RetrainFailed as e:
        print(e)
        sys.exit(1)
    print(summary["line"])


if __name__ == "__main__":
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    main()
