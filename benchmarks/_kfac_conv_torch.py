"""The curvlinops side of ``benchmarks/kfac_conv.py``, run in its own process and venv.

Reads ``--inputs`` (an ``.npz`` written by the JAX side: the digits, the CNN's
weights), writes ``--output`` (JSON): curvlinops' ``KFACLinearOperator``
factors (type-2 Fisher = GGN, weight and bias separate) of every layer for
``kfac_approx`` expand and reduce, and the time of each. Needs torch, einops
and curvlinops-for-pytorch.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import time

import numpy as np
import torch
from curvlinops import KFACLinearOperator
from torch import nn

LAYERS = ("convs_0", "convs_1", "hidden", "head")


class CNN(nn.Module):
    """jaxreg's ``CNN2D``: (conv 3×3, ReLU, 2×2 average pool) × 2, a ReLU MLP head."""

    def __init__(self, weights):
        super().__init__()
        self.convs_0 = nn.Conv2d(1, 16, 3, padding=1)
        self.convs_1 = nn.Conv2d(16, 32, 3, padding=1)
        self.hidden = nn.Linear(128, 64)
        self.head = nn.Linear(64, 10)
        with torch.no_grad():  # flax conv kernels are (kh, kw, in, out), dense (in, out)
            for name in LAYERS:
                layer, kernel = getattr(self, name), weights[f"{name}_kernel"]
                perm = (3, 2, 0, 1) if kernel.ndim == 4 else (1, 0)
                layer.weight.copy_(torch.as_tensor(kernel.transpose(perm)))
                layer.bias.copy_(torch.as_tensor(weights[f"{name}_bias"]))

    def forward(self, x):  # x: NHWC, as jaxreg's; flattened in (h, w, c) order like Flax
        h = x.permute(0, 3, 1, 2)
        for conv in (self.convs_0, self.convs_1):
            h = nn.functional.avg_pool2d(torch.relu(conv(h)), 2)
        h = torch.relu(self.hidden(h.permute(0, 2, 3, 1).flatten(1)))
        return self.head(h)


def factors(model, x, y, approximation: str, batch: int) -> tuple[dict, float]:
    data = [(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)]
    params = [p for p in model.parameters()]
    start = time.perf_counter()
    op = KFACLinearOperator(model, nn.CrossEntropyLoss(), params, data, fisher_type="type-2",
                            kfac_approx=approximation, check_deterministic=False,
                            num_data=len(x), num_per_example_loss_terms=1)  # fmt: skip
    op.compute_kronecker_factors()
    seconds = time.perf_counter() - start
    out = {}
    for name in LAYERS:
        out[name] = {
            "inputs": op._input_covariances[name].numpy().tolist(),
            "output_grads": op._gradient_covariances[name].numpy().tolist(),
        }
    return out, seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float64)
    inputs = np.load(args.inputs)
    model = CNN(inputs)
    x, y = torch.as_tensor(inputs["x"]), torch.as_tensor(inputs["y"], dtype=torch.long)
    logits = model(x[:8]).detach().numpy()
    version = importlib.metadata.version("curvlinops-for-pytorch")
    result = {"curvlinops": version, "logits": logits.tolist()}
    for approximation in ("expand", "reduce"):
        runs = [factors(model, x, y, approximation, int(inputs["batch"])) for _ in range(3)]
        result[approximation] = runs[0][0]
        result[f"{approximation}_seconds"] = [seconds for _, seconds in runs]
    with open(args.output, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
