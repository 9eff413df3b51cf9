"""The ``jaxreg`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jaxreg")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


_positive_int.__name__ = "positive integer"  # argparse names the type in its error message


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxreg",
        description="jaxreg: regularization research in JAX.",
    )
    parser.add_argument("--version", action="version", version=f"jaxreg {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    tour = commands.add_parser(
        "tour",
        help="reproduce the regularization study on MNIST-1D and write a report",
        description="Train the overfitting MLP baseline and the regularized variants on "
        "MNIST-1D (generated offline) and write report.md, results.json and figures.",
    )
    tour.add_argument("--quick", action="store_true", help="shorter training, same sections")
    tour.add_argument(
        "--out",
        default=None,
        help="output folder (default: jaxreg-tour, or jaxreg-tour-quick with --quick)",
    )
    tour.add_argument(
        "--extended",
        action="store_true",
        help="also the newer regularizers (max-norm, spectral norm, orthogonality, SWA, EMA, "
        "input-gradient penalty, R-Drop, SAM as a transform), each tuned like the others",
    )
    tour.add_argument(
        "--seeds",
        type=_positive_int,
        default=None,
        help="final seeds per row (default: 5, or 2 with --quick)",
    )
    one = commands.add_parser(
        "experiment",
        help="run one experiment script (its claim, evidence and PASS/FAIL)",
        description="Run one experiment; it writes a JSON result and a figure to --out.",
    )
    one.add_argument("name", help=f"one of: {', '.join(_experiment_names())}")
    one.add_argument("--out", default="jaxreg-experiments", help="output folder")
    size = one.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", action="store_true", help="the reduced configuration the test suite runs"
    )
    size.add_argument(
        "--full", action="store_true", help="extra parts beyond the report, where a script has them"
    )
    every = commands.add_parser(
        "experiments",
        help="run every experiment and print a table of verdicts",
        description="Run every experiment script and print a table of verdicts.",
    )
    every.add_argument(
        "--quick", action="store_true", help="every experiment in its reduced configuration"
    )
    every.add_argument("--out", default="jaxreg-experiments", help="output folder")
    return parser


def _experiment_names() -> list[str]:
    from jaxreg.experiments.__main__ import EXPERIMENTS

    return list(EXPERIMENTS)


def _sklearn_missing(command: str) -> bool:
    """The experiments compare against scikit-learn: say how to get it, not a traceback."""
    import importlib.util

    if importlib.util.find_spec("sklearn") is None:
        print(
            f"jaxreg {command}: the experiments need scikit-learn: pip install 'jaxreg[sklearn]'",
            file=sys.stderr,
        )
        return True
    return False


def _run_experiment(name: str, out: str, full: bool = False, quick: bool = False) -> int:
    import subprocess

    if name not in _experiment_names():
        print(
            f"jaxreg experiment: unknown name {name!r}; choose one of: "
            f"{', '.join(_experiment_names())}",
            file=sys.stderr,
        )
        return 2
    if _sklearn_missing("experiment"):
        return 2
    command = [sys.executable, "-m", f"jaxreg.experiments.{name}", "--out", out]
    command += ["--full"] if full else []
    command += ["--quick"] if quick else []
    return subprocess.run(command, check=False).returncode


def _writable_folder(path: str) -> str | None:
    """Why ``path`` cannot hold the report (checked before minutes of training), or None."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"cannot create {folder}: {error.strerror or error}"
    if not folder.is_dir():
        return f"{folder} exists and is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder} is not writable"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "tour":
        out = args.out or ("jaxreg-tour-quick" if args.quick else "jaxreg-tour")
        problem = _writable_folder(out)
        if problem is not None:
            print(f"jaxreg tour: --out: {problem}", file=sys.stderr)
            return 2
        from jaxreg.tour import TourConfig, run_tour

        if args.quick:
            config = TourConfig.quick() if args.seeds is None else TourConfig.quick(args.seeds)
        else:
            config = TourConfig() if args.seeds is None else TourConfig(seeds=args.seeds)
        run_tour(out, config, extended=args.extended)
    elif args.command == "experiment":
        return _run_experiment(args.name, args.out, args.full, args.quick)
    elif args.command == "experiments":
        if _sklearn_missing("experiments"):
            return 2
        from jaxreg.experiments.__main__ import main as run_all

        return run_all([*(["--quick"] if args.quick else []), "--out", args.out])
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
