"""Weight-matrix spectra against WeightWatcher 0.7: the same kernels, each side in its own process.

Kernels with Student-t entries (heavy-tailed ESDs, as trained layers have): dense
300×100, 512×256 and 1000×200, and a 3×3 convolution 32→64, in float64. jaxreg's
:func:`jaxreg.spectra.layer_spectrum` against WeightWatcher's ``analyze(conv2d_norm=False)``
(its default power-law fit; ``conv2d_norm`` would halve a convolution's eigenvalues):
α, α̂, stable rank, λ_max and Σλ. Targets: α within 0.05, the rest to float precision.

WeightWatcher needs torch: ``--weightwatcher-python`` is a Python with
``pip install torch weightwatcher``. The result, ``benchmarks/results/spectra.json``, is
what ``tests/test_spectra.py`` checks jaxreg against without either package.

Run: ``python -m benchmarks.spectra --weightwatcher-python /path/to/venv/bin/python``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from benchmarks._machine import describe  # noqa: E402
from jaxreg import spectra  # noqa: E402

LAYERS = [  # seed, shape, Student-t degrees of freedom
    (0, (300, 100), 3.0),
    (1, (512, 256), 4.0),
    (2, (1000, 200), 2.5),
    (3, (3, 3, 32, 64), 4.0),
]
RESULT = Path(__file__).parent / "results" / "spectra.json"


def kernel(seed: int, shape: tuple[int, ...], dof: float) -> np.ndarray:
    return np.random.default_rng(seed).standard_t(dof, shape)


def _ours(k: np.ndarray) -> dict[str, float]:
    s = spectra.layer_spectrum(k)
    return {
        "alpha": float(s.alpha),
        "alpha_weighted": float(s.alpha_weighted),
        "stable_rank": float(s.stable_rank),
        "spectral_norm": float(s.lambda_max),
        "norm": float(s.frobenius_norm) ** 2,
        "xmin": float(s.xmin),
        "D": float(s.ks_distance),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weightwatcher-python", required=True)
    args = parser.parse_args()
    kernels = {f"layer{i}": kernel(*spec) for i, spec in enumerate(LAYERS)}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "kernels.npz"
        np.savez(path, **kernels)
        output = subprocess.run(
            [args.weightwatcher_python, "-m", "benchmarks._weightwatcher", str(path)],
            check=True,
            capture_output=True,
            text=True,
            cwd=Path(__file__).parents[1],
        ).stdout
    theirs = json.loads(output.strip().splitlines()[-1])
    layers = []
    for (name, k), (seed, shape, dof) in zip(kernels.items(), LAYERS, strict=True):
        ours, ww = _ours(k), theirs["layers"][name]
        layers.append(
            {
                "seed": seed,
                "shape": list(shape),
                "dof": dof,
                "channels_last": True,
                "jaxreg": ours,
                "weightwatcher": ww,
                "alpha_difference": abs(ours["alpha"] - ww["alpha"]),
                "max_relative_norm_difference": max(
                    abs(ours[c] - ww[c]) / abs(ww[c])
                    for c in ("stable_rank", "spectral_norm", "norm")
                ),
            }
        )
        print(
            f"{name} {shape}: α {ours['alpha']:.4f} vs {ww['alpha']:.4f}; "
            f"norms rel. diff {layers[-1]['max_relative_norm_difference']:.1e}"
        )
    record = {"machine": describe(), "weightwatcher_version": theirs["version"], "layers": layers}
    RESULT.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {RESULT}", file=sys.stderr)


if __name__ == "__main__":
    main()
