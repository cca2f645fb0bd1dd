"""Scheduled retraining: rerun the pipeline when something changed and promote a better model.

    python -m flows.retrain [--force] [--set train.lr=0.0003] [--metric demo.msa.mae] [--margin 0.01]

1. `dvc status`: when nothing changed (and not --force), skip. When nothing changed but outputs are absent
   (a fresh clone), restore them: from the DVC cache, a DVC remote, else rebuilt by `dvc repro` and kept
   only when byte-identical to dvc.lock; no candidate is trained.
2. The candidate runs as a named DVC experiment (`dvc exp run -n retrain-<time> [-S ...]`), its output
   streamed into the run log.
3. `dvc metrics diff` against the accepted revision: git tag `promote.tag`, or, before any promotion,
   the committed HEAD (so a first run never promotes a model worse than the committed baseline).
4. The promotion rule of params `promote` (metric, min/max, margin): when the candidate is better by at
   least the margin (or nothing was accepted or committed yet), the pipeline's tracked files are
   committed and the tag moves to that commit.
5. Otherwise (kept), and when a stage fails, the workspace goes back to the accepted revision: params,
   dvc.lock and reports from git, the DVC outputs (models, features) by `dvc checkout` (or `dvc pull`;
   outputs found in neither are removed and named, never left as the candidate's). The served model
   is always the accepted one; a kept candidate stays inspectable as its experiment
   (`dvc exp show`, `dvc exp apply retrain-<time>`).
6. Artifacts: the metric diff (markdown) and the per-emotion scores (table).
Ends with one line: `retrain: skipped ...`, `retrain: restored ...`, `retrain: trained, promoted|kept ...`, or
`retrain: failed: <stage>: <reason>` (the flow then fails, and the CLI exits 1).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.exceptions import MissingContextError

from flows.pipeline import DvcFailed, run_dvc, try_dvc
from mmolre import EMOTIONS
from mmolre.metrics import accepted_metrics, flatten

# What a promotion commits: the pipeline's git-tracked state (outputs that DVC caches are in dvc.lock).
TRACKED = ["dvc.lock", "params.yaml", "reports"]
ABSENT = {"deleted", "not in cache"}  # `dvc status` words for an output (or a dep that is one) not in the workspace


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


class RetrainFailed(RuntimeError):
    """A candidate's stage failed; the workspace is back at the accepted revision. str() is the `retrain:` line."""


class OutputsMissing(RuntimeError):
    """Outputs of the accepted revision that neither the DVC cache nor a remote holds (removed from the workspace)."""

    def __init__(self, paths: list[str]):
        super().__init__(f"the accepted revision's outputs {', '.join(paths)} are in no DVC cache or remote, so "
                         "they were removed from the workspace (the candidate's are never left live): `dvc pull` "
                         "them from a remote that holds them, or `dvc repro` to rebuild them")
        self.paths = paths


def accepted_revision(tag: str, repo: str) -> str | None:
    """The revision whose model is served: the promotion tag, else the committed HEAD (None in a repo
    without commits)."""
    for rev in (tag, "HEAD"):
        if git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").returncode == 0:
            return rev
    return None


def restore(repo: str, rev: str | None) -> None:
    """Put params, dvc.lock, reports and the DVC outputs back as they are at `rev`. Outputs the cache does
    not hold are pulled from the DVC remote when there is one; any still missing are removed from the
    workspace (what is there is the candidate's: never left live) and OutputsMissing names them."""
    if rev is None:
        return
    tracked = [p for p in TRACKED if git(repo, "cat-file", "-e", f"{rev}:{p}").returncode == 0]
    if tracked:
        git(repo, "checkout", rev, "--", *tracked)
    git(repo, "clean", "-fdq", "--", "reports")  # files only the candidate wrote
    if not bring_outputs(repo):
        missing = not_restored(repo)
        for path in missing:
            target = Path(repo) / path
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        raise OutputsMissing(missing)


def bring_outputs(repo: str) -> bool:
    """The outputs of the workspace's dvc.lock from the DVC cache, else the DVC remote; whether all came. One
    log line per step: not finding them is an answer, not a failure."""
    logger = step_logger()
    found, _ = try_dvc(["checkout", "--force"], repo)
    logger.info(f"retrain: restore: dvc checkout: {'every output from the DVC cache' if found else 'not all in the DVC cache'}")
    if found:
        return True
    if not has_remote(repo):
        logger.info("retrain: restore: dvc pull: no DVC remote configured")
        return False
    found, _ = try_dvc(["pull", "--force"], repo)
    logger.info(f"retrain: restore: dvc pull: {'every output from the DVC remote' if found else 'not all on the DVC remote'}")
    return found


def step_logger() -> logging.Logger:
    """The flow run's logger, or this module's where `restore` is called on its own."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def has_remote(repo: str) -> bool:
    return bool(run_dvc(["remote", "list"], repo).strip())


def not_restored(repo: str) -> list[str]:
    """The outputs that differ from dvc.lock or are absent (`dvc status`'s changed outs)."""
    changed = last_json(run_dvc(["status", "--json"], repo))
    return sorted({path for entries in changed.values() for c in entries if isinstance(c, dict)
                   for path in c.get("changed outs", {})})


def only_absent_outputs(changed: dict) -> bool:
    """Whether `dvc status` reports nothing but outputs absent from the workspace, and deps that are such
    outputs or folders holding them (`models`), as in a fresh clone: the accepted revision is to be
    restored, not retrained."""
    changes = [c for entries in changed.values() for c in entries]
    if not changes or not all(isinstance(c, dict) and set(c) <= {"changed deps", "changed outs"} for c in changes):
        return False
    outs = {path: v for c in changes for path, v in c.get("changed outs", {}).items()}
    deps = {path: v for c in changes for path, v in c.get("changed deps", {}).items()}
    absent = {path for path, v in outs.items() if v in ABSENT}
    return len(absent) == len(outs) and all(
        (isinstance(v, str) and v in ABSENT) or any(a == path or a.startswith(f"{path}/") for a in absent)
        for path, v in deps.items())


def restore_accepted(repo: str, accepted_rev: str | None) -> str:
    """The `retrain:` line of a run whose only change is absent outputs: they come from the cache or the
    remote, else `dvc repro` rebuilds them, kept only when byte-identical to dvc.lock (else removed)."""
    if bring_outputs(repo):
        return "retrain: restored the accepted outputs from DVC (nothing changed since the accepted revision)"
    get_run_logger().info("retrain: restore: dvc repro: rebuilding the accepted outputs")
    try:
        run_dvc(["repro"], repo)
    except DvcFailed as e:
        stage, reason = failed_stage(e)
        fail(repo, accepted_rev, f"retrain: failed: restore: {stage}: {reason}")
    if git(repo, "diff", "--quiet", "--", "dvc.lock").returncode == 0:
        return ("retrain: restored the accepted outputs: in no DVC cache or remote, so rebuilt by `dvc repro`, "
                "byte for byte (nothing changed since the accepted revision)")
    fail(repo, accepted_rev, "retrain: failed: restore: the accepted outputs are in no DVC cache or remote, and "
                             "`dvc repro` rebuilt them with other bytes (not served); `dvc pull` them from the "
                             "remote they were pushed to (`dvc remote add -d NAME URL`)")


def fail(repo: str, accepted_rev: str | None, line: str) -> None:
    """Put the workspace back at the accepted revision, log the `retrain: failed` line and fail the flow."""
    try:
        restore(repo, accepted_rev)
    except OutputsMissing as e:
        line += f"; {e}"
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
    accepted_rev = accepted_revision(rule["tag"], repo)
    if not (changed or force or set_params) or (only_absent_outputs(changed) and not (force or set_params)):
        line = restore_accepted(repo, accepted_rev) if changed else "retrain: skipped (nothing changed since the last run)"
        logger.info(line)
        return {"trained": False, "line": line}
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
    diff = run_dvc(["metrics", "diff", accepted_rev, "--md"], repo) if old else "(no accepted model yet)"
    create_markdown_artifact(f"# Metrics against the accepted model\n\nPromotion metric: `{metric}`\n\n{diff}",
                             key="mmolre-metrics-diff", description=f"reports/metrics.json against {accepted_rev}")
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
        try:
            restore(repo, accepted_rev)
        except OutputsMissing as e:
            fail(repo, None, f"retrain: failed: restore: kept the accepted model ({change}), but {e}")
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
