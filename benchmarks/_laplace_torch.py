"""The laplace-torch side of ``benchmarks/laplace.py``, run in its own process and venv.

Reads ``--inputs`` (an ``.npz`` written by the JAX side: data, the trained MLP's
weights, the perturbed members of the timing grid), writes ``--output`` (JSON).
Needs only torch and laplace-torch (``pip install torch laplace-torch``).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from laplace import Laplace
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def _model(hidden_kernel, hidden_bias, out_kernel, out_bias) -> nn.Module:
    model = nn.Sequential(
        nn.Linear(hidden_kernel.shape[0], hidden_kernel.shape[1]),
        nn.ReLU(),
        nn.Linear(out_kernel.shape[0], out_kernel.shape[1]),
    )
    with torch.no_grad():  # flax kernels are (in, out); torch weights are (out, in)
        model[0].weight.copy_(torch.as_tensor(hidden_kernel.T))
        model[0].bias.copy_(torch.as_tensor(hidden_bias))
        model[2].weight.copy_(torch.as_tensor(out_kernel.T))
        model[2].bias.copy_(torch.as_tensor(out_bias))
    return model


def _loader(x, y, batch_size: int) -> DataLoader:
    dataset = TensorDataset(torch.as_tensor(x), torch.as_tensor(y, dtype=torch.long))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False)


def agreement(inputs, precisions) -> dict:
    model = _model(*(inputs[k] for k in ("hk", "hb", "ok", "ob")))
    loader = _loader(inputs["x"], inputs["y"], 500)
    x_test = torch.as_tensor(inputs["x_test"])
    y_test = torch.as_tensor(inputs["y_test"], dtype=torch.long)
    out = {}
    for name, subset, structure in (
        ("full", "all", "full"),
        ("diag", "all", "diag"),
        ("kron", "all", "kron"),
        ("last_layer", "last_layer", "full"),
    ):
        la = Laplace(model, "classification", subset_of_weights=subset, hessian_structure=structure)
        la.fit(loader)
        values = [
            float(la.log_marginal_likelihood(prior_precision=torch.tensor(p, dtype=torch.float64)))
            for p in precisions
        ]
        la.prior_precision = torch.tensor(precisions[-1], dtype=torch.float64)
        probs = la(x_test, pred_type="glm", link_approx="probit")
        nll = float(-torch.log(probs[torch.arange(len(y_test)), y_test]).mean())
        out[name] = {"log_marginal_likelihood": values, "test_nll_glm_probit": nll}
    return out


def grid(inputs, steps: int, members: int) -> dict:
    loader = _loader(inputs["x"], inputs["y"], 500)
    start = time.perf_counter()
    tuned = []
    for m in range(members):
        model = _model(*(inputs[f"grid_{k}"][m] for k in ("hk", "hb", "ok", "ob")))
        la = Laplace(model, "classification", subset_of_weights="all", hessian_structure="diag")
        la.fit(loader)
        la.optimize_prior_precision(method="marglik", n_steps=steps, lr=0.1)
        tuned.append(float(la.prior_precision))
    return {"seconds": time.perf_counter() - start, "members": members, "tuned": tuned}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--grid-members", type=int, default=0)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float64)
    inputs = dict(np.load(args.inputs))
    precisions = [float(p) for p in inputs["precisions"]]
    result = {
        "torch": torch.__version__,
        "agreement": agreement(inputs, precisions),
    }
    if args.grid_members:
        result["grid"] = grid(inputs, args.steps, args.grid_members)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
