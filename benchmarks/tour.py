"""How long the tour takes: ``python -m experiments.tour`` timed in a fresh process.

Runs the tour (``--quick`` by default; ``--mode default`` or ``extended`` for the
full runs) as a user would, in its own process, and records its wall time, the
tour's own ``elapsed_seconds`` and the host's speed in
``benchmarks/results/tour.json`` (one entry per mode, earlier modes kept). The
README's tour times are generated from it (``python -m benchmarks.readme``).
``--keep DIR`` keeps the report and figures (the docs' ``tour_*.png`` come from an
extended run).

Run: ``python -m benchmarks.tour [--mode quick|default|extended] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import _protocol

FLAGS = {"quick": ["--quick"], "default": [], "extended": ["--extended"]}


def run_tour(mode: str, out: Path) -> dict:
    command = [sys.executable, "-m", "experiments.tour", "--out", str(out), *FLAGS[mode]]
    print(f"$ {' '.join(command)}", flush=True)
    start = time.perf_counter()
    subprocess.run(command, cwd=_protocol.ROOT, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    recorded = json.loads((out / "results.json").read_text())
    return {"wall_s": wall, "elapsed_seconds": recorded["elapsed_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=tuple(FLAGS), default="quick")
    parser.add_argument("--keep", type=Path, default=None, help="keep the tour's output here")
    options = parser.parse_args()
    host = _protocol.host()
    print(f"host: {host}", flush=True)
    if options.keep is not None:
        entry = run_tour(options.mode, options.keep)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            entry = run_tour(options.mode, Path(tmp))
    entry["host"] = host
    path = _protocol.RESULTS / "tour.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    result[options.mode] = entry
    print(f"{options.mode}: {entry['wall_s']:.0f} s wall; wrote {_protocol.write('tour', result)}")


if __name__ == "__main__":
    main()
