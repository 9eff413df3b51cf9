"""WeightWatcher's side of ``benchmarks/spectra.py``: run in a Python with torch and weightwatcher.

Reads kernels from an ``.npz`` (Flax layouts), builds the same layers in PyTorch,
and prints WeightWatcher's per-layer metrics as JSON on stdout.
"""

import json
import logging
import sys

import numpy as np
import torch
import weightwatcher

logging.disable(logging.WARNING)


def _layer(kernel: np.ndarray) -> torch.nn.Module:
    if kernel.ndim == 2:
        layer = torch.nn.Linear(kernel.shape[0], kernel.shape[1], bias=False)
        layer.weight.data = torch.tensor(kernel.T.copy())
    else:  # (kh, kw, c_in, c_out) -> torch's (c_out, c_in, kh, kw)
        layer = torch.nn.Conv2d(kernel.shape[2], kernel.shape[3], kernel.shape[:2], bias=False)
        layer.weight.data = torch.tensor(np.transpose(kernel, (3, 2, 0, 1)).copy())
    return layer


def main(path: str) -> None:
    kernels = np.load(path)
    names = sorted(kernels.files)
    model = torch.nn.Sequential(*[_layer(kernels[name]) for name in names])
    watcher = weightwatcher.WeightWatcher(model=model)
    details = watcher.analyze(conv2d_norm=False, randomize=False, plot=False)
    columns = ["alpha", "alpha_weighted", "stable_rank", "spectral_norm", "norm", "xmin", "D"]
    rows = {name: {c: float(details.iloc[i][c]) for c in columns} for i, name in enumerate(names)}
    print(json.dumps({"version": weightwatcher.__version__, "layers": rows}))


if __name__ == "__main__":
    main(sys.argv[1])
