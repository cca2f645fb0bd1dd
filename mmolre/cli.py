"""`mmolre <command>`: each pipeline stage as a command that reads its params.yaml section, and the tools around
them (predict, publish, model-info, ...). The commands are entry points of the group `mmolre.commands`
(pyproject.toml), so adding one leaves this file, which every stage imports, unchanged."""

from __future__ import annotations

import argparse
import functools
import importlib
import sys
from importlib.metadata import entry_points
from pathlib import Path

from mmolre import MmolreError, __version__
from mmolre.params import load_params, validate_params

COMMANDS = "mmolre.commands"  # the entry-point group naming each command's module (pyproject.toml)


@functools.cache
def commands() -> dict[str, str]:
    """`mmolre <command>` -> its module, as pyproject.toml declares them (the installed package's metadata)."""
    found = {ep.name: ep.value for ep in entry_points(group=COMMANDS)}
    if not found:
        raise SystemExit("mmolre: no commands found: the package is not installed; run `make setup` "
                         "(pip install -e .)")
    return found


def add_scoring_roots(parser: argparse.ArgumentParser) -> None:
    """Where the stages that score trained models (evaluate, transfer) read features and models and write reports."""
    parser.add_argument("--features-root", type=Path, default=Path("data/features"))
    parser.add_argument("--models-root", type=Path, default=Path("models"))
    parser.add_argument("--reports", type=Path, default=Path("reports"))


def parser(only: str | None = None) -> argparse.ArgumentParser:
    """The CLI; with `only`, just that stage's module is imported (stages import torch: seconds each)."""
    root = argparse.ArgumentParser(
        prog="mmolre",
        description="MMoLRE pipeline stages and tools. `dvc repro` runs the stages in order; each also runs alone.",
        epilog="Every stage reads params.yaml; override any value with --set section.key=value.")
    root.add_argument("--version", action="version", version=f"mmolre {__version__}")
    subparsers = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in commands().items():
        if only is not None and name != only:
            subparsers.add_parser(name)
            continue
        module = importlib.import_module(module_name)
        doc = (module.__doc__ or "").strip()
        sub = subparsers.add_parser(name, help=doc.splitlines()[0] if doc else name, description=doc,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        if getattr(module, "USES_PARAMS", True):
            sub.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
            sub.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                             help="override a parameter, e.g. --set train.lr=0.0005 (repeatable)")
        module.add_arguments(sub)
        sub.set_defaults(module=module)
    return root


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser(only=argv[0] if argv and argv[0] in commands() else None).parse_args(argv)
    try:
        uses_params = getattr(args.module, "USES_PARAMS", True)
        params = load_params(args.params, args.overrides) if uses_params else {}
        if uses_params:  # before any work: nothing is written on a bad value. Each stage validates the sections
            validate_params(params, args.module.SECTIONS)  # it reads (SECTIONS; model and runs: in its run())
        args.module.run(args, params)
    except MmolreError as e:
        print(f"mmolre {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # permission denied, disk full, ...: the OS's words and the file, no traceback
        where = f": {e.filename}" if e.filename else ""
        print(f"mmolre {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mmolre {args.command}: interrupted; nothing incomplete was left under an output's name "
              "(featurize keeps its finished chunks and resumes)", file=sys.stderr)
        return 130
    return 0


def run_stage(stage: str) -> None:
    """Entry for `python -m mmolre.<stage> [args]`."""
    sys.exit(main([stage, *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
