"""Serve the retraining flow on a cron schedule: `python -m flows.schedule --cron "0 3 * * 1"`.

Needs a Prefect API: start one with `prefect server start` (another terminal) and point to it
with `prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api`. This process then waits
and runs `flows.retrain` at every tick; stop it with Ctrl-C. With `--pool NAME` it instead deploys
the schedule on that Prefect work pool and returns: the pool's workers run it (the checkout at
`--repo` must exist where they run, as it is the one retrained and tagged). Without a server, let
the system's cron call `python -m flows.retrain` instead (docs/retraining.md).
"""

from __future__ import annotations

import argparse
import os

from flows.retrain import retrain


def deployment(cron: str, repo: str, force: bool = False, name: str = "mmolre-retrain"):
    return retrain.to_deployment(name=name, cron=cron, parameters={"repo": repo, "force": force},
                                 description="Retrain MMoLRE when the pipeline changed; promote a better model.")


def deploy_on_pool(pool: str, cron: str, repo: str, force: bool = False, name: str = "mmolre-retrain"):
    """The schedule as a deployment on a work pool, its code read from the checkout `repo`."""
    return retrain.from_source(source=repo, entrypoint="flows/retrain.py:retrain").deploy(
        name=name, work_pool_name=pool, cron=cron, parameters={"repo": repo, "force": force},
        description="Retrain MMoLRE when the pipeline changed; promote a better model.", print_next_steps=False,
        ignore_warnings=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cron", default="0 3 * * 1", help='cron schedule (default "0 3 * * 1": Mondays 03:00)')
    parser.add_argument("--repo", default=os.getcwd(), help="the project checkout (default: here)")
    parser.add_argument("--force", action="store_true", help="retrain at every tick even when nothing changed")
    parser.add_argument("--pool", help="deploy on this Prefect work pool (its workers run it) instead of serving here")
    args = parser.parse_args()
    os.environ.setdefault("DO_NOT_TRACK", "1")
    repo = os.path.abspath(args.repo)
    if args.pool:
        deploy_on_pool(args.pool, args.cron, repo, args.force)
        print(f"schedule: mmolre-retrain deployed on work pool {args.pool!r} ({args.cron}); its workers run it")
        return
    from prefect import serve

    serve(deployment(args.cron, repo, args.force))


if __name__ == "__main__":
    main()
