"""Leave-one-session-out, the IEMOCAP protocol: one DVC experiment per held-out session, then their mean.

    python -m flows.folds                       # params.yaml names the corpus (data.dataset: iemocap)
    python -m flows.folds --set data.label_space=iemocap6 --folds 1,2,3

Fold k is `dvc exp run --temp -n <prefix>-s<k> -S data.test_session=<k> [-S ...]`: one after another (one dvc
process at a time), each in a temporary copy, so the workspace is left as it is. A fold whose experiment
already exists on this commit is not run again. Then `dvc exp show --json` gives each fold's
reports/metrics.json, and reports/folds.json holds them with their mean and sample std (`<key>_std`) under
"mean"; the experiments stay in `dvc exp show` (compare them, or `dvc exp apply` one).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from prefect import flow, get_run_logger

from flows.pipeline import run_dvc
from mmolre.metrics import mean_std
from mmolre.study import experiments_of

SESSIONS = (1, 2, 3, 4, 5)
METRICS = "reports/metrics.json"


def fold_name(prefix: str, session: int) -> str:
    return f"{prefix}-s{session}"


@flow(name="mmolre-folds")
def folds(repo: str = ".", sessions: tuple[int, ...] = SESSIONS, set_params: tuple[str, ...] = (),
          prefix: str = "fold", metrics_path: str = METRICS, out: str = "reports/folds.json") -> dict:
    """Run the folds not yet run on this commit, and write their metrics and mean to `out` (in `repo`)."""
    logger = get_run_logger()
    done = experiments_of(json.loads(run_dvc(["exp", "show", "--json"], repo)))
    for session in sessions:
        name = fold_name(prefix, session)
        if name in done:
            logger.info(f"folds: {name} exists on this commit, not run again")
            continue
        run_dvc(["exp", "run", "--temp", "-n", name, "-S", f"data.test_session={session}",
                 *[a for p in set_params for a in ("-S", p)]], repo)
    shown = experiments_of(json.loads(run_dvc(["exp", "show", "--json"], repo)))
    per_fold = {str(s): shown[fold_name(prefix, s)][metrics_path] for s in sessions}
    result = {"folds": per_fold, "mean": mean_std(list(per_fold.values()))}
    Path(repo, out).parent.mkdir(parents=True, exist_ok=True)
    Path(repo, out).write_text(json.dumps(result, indent=2) + "\n")
    logger.info(f"folds: sessions {', '.join(map(str, sessions))} -> {out}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=".", help="the project (default: .)")
    parser.add_argument("--folds", default=",".join(map(str, SESSIONS)), help="held-out sessions (default 1,2,3,4,5)")
    parser.add_argument("--set", dest="set_params", action="append", default=[], metavar="KEY=VALUE",
                        help="another param of every fold (a `dvc exp run -S` value; repeatable)")
    parser.add_argument("--prefix", default="fold", help="experiment names: <prefix>-s<session> (default fold)")
    args = parser.parse_args()
    os.environ.setdefault("DO_NOT_TRACK", "1")
    sessions = tuple(int(s) for s in args.folds.split(",") if s.strip())
    if not sessions or not set(sessions) <= set(SESSIONS):
        parser.error(f"--folds {args.folds}: sessions among {', '.join(map(str, SESSIONS))}")
    result = folds(args.repo, sessions, tuple(args.set_params), args.prefix)
    print(json.dumps(result["mean"], indent=2))


if __name__ == "__main__":
    main()
