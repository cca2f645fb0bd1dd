"""Run the DVC pipeline as a Prefect flow: `python -m flows.pipeline [--force] [--set k=v ...]`.

DVC owns the stages and their caching, so the task that calls it has no Prefect cache,
and the flow runs one `dvc` command at a time (DVC locks the workspace). The download stage runs
first, as its own task with retries and backoff (the network fails and recovers); the deterministic
stages after it are not retried (they would fail the same way).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE


DOWNLOAD_RETRY_DELAYS_S = (10, 60, 300)  # one retry after each


class DvcFailed(RuntimeError):
    pass


def dvc(args: list[str], repo: str = ".") -> tuple[int, str]:
    """`dvc <args>` in `repo`, its output printed as it comes (into the run log, from a task that logs prints):
    (exit code, output). The stages run `repo`'s own code (first on PYTHONPATH: a clone's, not the installed
    checkout's)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join([str(Path(repo).resolve()), *filter(None, [os.environ.get("PYTHONPATH")])])}
    process = subprocess.Popen([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = []
    for line in process.stdout:
        print(line.rstrip())
        lines.append(line)
    return process.wait(), "".join(lines)


@task(cache_policy=NO_CACHE, log_prints=True)
def run_dvc(args: list[str], repo: str = ".") -> str:
    """`dvc <args>` in `repo`, its output streamed into the run log; fails on a non-zero exit."""
    code, output = dvc(args, repo)
    if code != 0:
        raise DvcFailed(f"dvc {' '.join(args)} exited with {code}:\n{''.join(output.splitlines(True)[-20:])}")
    return output


@task(cache_policy=NO_CACHE, log_prints=True)
def try_dvc(args: list[str], repo: str = ".") -> tuple[bool, str]:
    """`dvc <args>` where failing is an expected answer (a restore step that may find nothing): (it succeeded,
    its output), the task itself completing either way."""
    code, output = dvc(args, repo)
    return code == 0, output


@flow(name="mmolre-pipeline")
def pipeline(repo: str = ".", force: bool = False, set_params: tuple[str, ...] = ()) -> dict:
    """Reproduce the pipeline (as a DVC experiment when params are overridden); return the metrics."""
    if set_params:
        run_dvc(["exp", "run", *[a for p in set_params for a in ("-S", p)]], repo)
    else:
        force_flag = ["--force"] if force else []
        download = run_dvc.with_options(name="download", retries=len(DOWNLOAD_RETRY_DELAYS_S),
                                        retry_delay_seconds=list(DOWNLOAD_RETRY_DELAYS_S))
        download(["repro", *force_flag, "download"], repo)
        run_dvc(["repro", *force_flag, "--downstream", "prepare"], repo)  # every stage after download
    return json.loads(run_dvc(["metrics", "show", "--json"], repo))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=".", help="the project checkout (default: .)")
    parser.add_argument("--force", action="store_true", help="rerun every stage")
    parser.add_argument("--set", dest="set_params", action="append", default=[], metavar="KEY=VALUE",
                        help="run as `dvc exp run -S KEY=VALUE` (repeatable)")
    args = parser.parse_args()
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    metrics = pipeline(args.repo, args.force, tuple(args.set_params))
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
