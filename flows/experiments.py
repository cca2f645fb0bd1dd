"""Experiments across machines: one Prefect flow run per experiment point, on a process work pool.

    prefect work-pool create gpus --type process                       # once, against your Prefect server
    CUDA_VISIBLE_DEVICES=0 prefect worker start --pool gpus --limit 1   # one per GPU, on any machine
    python -m flows.experiments --pool gpus --point train.lr=0.001 --point train.lr=0.0003,data.seed=7

Each point is a run of the `mmolre-experiment` deployment on a worker: a fresh clone of the git remote
at this checkout's revision, `dvc pull` (the outputs already computed come from the DVC remote),
`dvc exp run -n <name> -S ...`, then `dvc exp push` (the experiment's git ref to the git remote, its
outputs to the DVC remote). This flow waits for every point, brings them here with `dvc exp pull` and
prints `dvc exp show`. Needs: the revision pushed to the git remote, a DVC remote every machine
reaches (`dvc remote add -d ...`, committed), and the workers' Python with this project installed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.deployments import run_deployment
from prefect.client.orchestration import get_client
from prefect.runner.storage import GitRepository

from flows.pipeline import DvcFailed, run_dvc

DEPLOYMENT = "mmolre-experiment/mmolre-experiment"  # <flow name>/<deployment name>


def git(repo: str | Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


@flow(name="mmolre-experiment")
def experiment(git_url: str, rev: str, name: str, set_params: list[str], git_remote: str = "origin") -> str:
    """One point, on whichever worker takes it: clone, pull what is computed, run, push the experiment."""
    with tempfile.TemporaryDirectory(prefix=f"mmolre-{name}-") as work:
        git(work, "clone", "--quiet", git_url, ".")
        git(work, "checkout", "--quiet", rev)
        try:
            run_dvc(["pull", "--allow-missing"], work)  # a stage whose outputs are on the remote is not rerun
        except DvcFailed as e:
            get_run_logger().warning(f"dvc pull: {e}; the experiment computes what it needs")
        run_dvc(["exp", "run", "-n", name, *[a for p in set_params for a in ("-S", p)]], work)
        run_dvc(["exp", "push", git_remote, name], work)  # its git ref, and its outputs to the DVC remote
    return name


def deploy(pool: str, source: str | GitRepository) -> str:
    """The experiment flow as a deployment on `pool`, its code taken from `source` (the git remote at the
    revision, or a folder every worker has); returns the deployment's name."""
    experiment.from_source(source=source, entrypoint="flows/experiments.py:experiment").deploy(
        name=DEPLOYMENT.split("/")[1], work_pool_name=pool, print_next_steps=False, ignore_warnings=True,
        description="One mmolre experiment point: dvc exp run in a clone, then dvc exp push.")
    return DEPLOYMENT


def checked_revision(repo: str, git_remote: str) -> tuple[str, str]:
    """(git URL of `git_remote`, HEAD) once HEAD is on that remote: the workers clone it from there."""
    url, rev = git(repo, "remote", "get-url", git_remote), git(repo, "rev-parse", "HEAD")
    if rev not in git(repo, "ls-remote", git_remote):
        git(repo, "fetch", "--quiet", git_remote)
        if not git(repo, "branch", "-r", "--contains", rev):
            raise RuntimeError(f"HEAD {rev[:7]} is not on git remote {git_remote!r}: push it first (the workers "
                               "clone the revision from there)")
    return url, rev


def wait_for(run_ids: list, poll_s: float = 2.0) -> list:
    """The flow runs once every one is in a final state (completed, failed, crashed, cancelled)."""
    with get_client(sync_client=True) as client:
        while True:
            runs = [client.read_flow_run(run_id) for run_id in run_ids]
            if all(run.state is not None and run.state.is_final() for run in runs):
                return runs
            time.sleep(poll_s)


@flow(name="mmolre-experiments")
def experiments(points: list[list[str]], pool: str, repo: str = ".", git_remote: str = "origin",
                source: str | None = None, prefix: str | None = None) -> dict:
    """Every point as its own flow run on `pool`, waited for, then pulled here; returns names and exp show."""
    logger = get_run_logger()
    git_url, rev = checked_revision(repo, git_remote)
    deployment = deploy(pool, source or GitRepository(url=git_url, commit_sha=rev))
    prefix = prefix or time.strftime("exp-%Y%m%d-%H%M%S", time.gmtime())
    names = [f"{prefix}-{k}" for k in range(len(points))]
    runs = [run_deployment(deployment, timeout=0, flow_run_name=name, parameters={
        "git_url": git_url, "rev": rev, "name": name, "set_params": point, "git_remote": git_remote})
        for name, point in zip(names, points)]
    finished = wait_for([run.id for run in runs])
    failed = [name for name, run in zip(names, finished) if not run.state.is_completed()]
    if failed:
        raise RuntimeError(f"experiment point(s) {', '.join(failed)} did not complete; see their flow runs")
    for name in names:
        run_dvc(["exp", "pull", git_remote, name], repo)
    shown = run_dvc(["exp", "show", "--md", "--only-changed"], repo)
    logger.info(f"experiments: {len(names)} point(s) ran on pool {pool!r} and were pulled: {', '.join(names)}")
    return {"names": names, "show": shown}


def parse_point(text: str) -> list[str]:
    """`a.b=1,c.d=2` -> ["a.b=1", "c.d=2"] (the -S values of one point)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", required=True, help="the Prefect work pool whose workers run the points")
    parser.add_argument("--point", dest="points", action="append", required=True, metavar="KEY=VALUE[,KEY=VALUE]",
                        help="one experiment point: its `dvc exp run -S` values (repeatable: one per point)")
    parser.add_argument("--repo", default=".", help="this checkout (default: .)")
    parser.add_argument("--git-remote", default="origin", help="where workers clone from and push to")
    parser.add_argument("--source", help="where workers load the flow's code (default: the git remote's URL)")
    args = parser.parse_args()
    os.environ.setdefault("DO_NOT_TRACK", "1")
    result = experiments([parse_point(p) for p in args.points], args.pool, args.repo, args.git_remote, args.source)
    print(result["show"])


if __name__ == "__main__":
    main()
