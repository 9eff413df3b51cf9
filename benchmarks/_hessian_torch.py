"""The PyTorch sides of ``benchmarks/hessian.py``: PyHessian, hessian-eigenthings, curvlinops.

Runs in its own process and virtualenv (``pip install torch pyhessian
hessian-eigenthings==1.0.0a5 curvlinops-for-pytorch``; no JAX needed):
``python -m benchmarks._hessian_torch pyhessian|eigenthings|curvlinops --workload FILE``.
It reads the workload the JAX side prepared (weights, batches, float64
references), ports the model, runs each task from ``--starts`` random starts
after one warm-up start, and prints its result as JSON on its last line.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks import _protocol

WARMUP_START, TOL = _protocol.WARMUP_START, _protocol.TOL
TRACE_HVPS, DENSITY_STEPS = _protocol.TRACE_HVPS, _protocol.DENSITY_STEPS
relative_error, measure = _protocol.relative_error, _protocol.measure_starts


def nested(stored: dict, prefix: str) -> dict:
    """``{"p/blocks/0/conv1/kernel": a}`` -> ``{"blocks": {"0": {"conv1": {"kernel": a}}}}``."""
    tree: dict = {}
    for name, value in stored.items():
        parts = name.split("/")
        if parts[0] != prefix:
            continue
        node = tree
        for part in parts[1:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree


def _tensor(array) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


def mlp(params: dict) -> nn.Module:
    layers = [params["layers"][str(i)] for i in range(len(params["layers"]))]
    modules: list[nn.Module] = []
    for index, layer in enumerate(layers):
        linear = nn.Linear(*layer["kernel"].shape)
        with torch.no_grad():  # flax kernels are (in, out); torch weights are (out, in)
            linear.weight.copy_(_tensor(layer["kernel"].T))
            linear.bias.copy_(_tensor(layer["bias"]))
        modules += [linear] + ([nn.ReLU()] if index < len(layers) - 1 else [])
    return nn.Sequential(*modules)


def _conv(kernel, stride: int, padding: int) -> nn.Conv2d:
    layer = nn.Conv2d(
        kernel.shape[2], kernel.shape[3], kernel.shape[0], stride, padding, bias=False
    )
    with torch.no_grad():  # (h, w, in, out) -> (out, in, h, w)
        layer.weight.copy_(_tensor(kernel.transpose(3, 2, 0, 1)))
    return layer


def _batch_norm(p: dict, s: dict) -> nn.BatchNorm2d:
    layer = nn.BatchNorm2d(p["scale"].size, eps=1e-5)
    with torch.no_grad():
        layer.weight.copy_(_tensor(p["scale"]))
        layer.bias.copy_(_tensor(p["bias"]))
        layer.running_mean.copy_(_tensor(s["mean"]))
        layer.running_var.copy_(_tensor(s["var"]))
    return layer


class _Block(nn.Module):
    def __init__(self, p: dict, s: dict):
        super().__init__()
        stride = 2 if "projection" in p else 1
        self.conv1, self.bn1 = (
            _conv(p["conv1"]["kernel"], stride, 1),
            _batch_norm(p["bn1"], s["bn1"]),
        )
        self.conv2, self.bn2 = _conv(p["conv2"]["kernel"], 1, 1), _batch_norm(p["bn2"], s["bn2"])
        self.shortcut: nn.Module = nn.Identity()
        if stride == 2:
            self.shortcut = nn.Sequential(
                _conv(p["projection"]["kernel"], 2, 0),
                _batch_norm(p["projection_bn"], s["projection_bn"]),
            )

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class _ResNet20(nn.Module):
    def __init__(self, params: dict, state: dict):
        super().__init__()
        self.stem = _conv(params["stem"]["kernel"], 1, 1)
        self.stem_bn = _batch_norm(params["stem_bn"], state["stem_bn"])
        blocks = [_Block(params["blocks"][str(i)], state["blocks"][str(i)]) for i in range(9)]
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(*params["head"]["kernel"].shape)
        with torch.no_grad():
            self.head.weight.copy_(_tensor(params["head"]["kernel"].T))
            self.head.bias.copy_(_tensor(params["head"]["bias"]))

    def forward(self, x):
        h = torch.relu(self.stem_bn(self.stem(x)))
        return self.head(self.blocks(h).mean(dim=(2, 3)))


def load(path: Path):
    """``(model, batches, stored)``: the ported model in eval mode and the workload's batches."""
    stored = dict(np.load(path))
    kind = str(stored["kind"])
    if kind == "mlp":
        model, x = mlp(nested(stored, "p")), stored["x"]
    else:
        model, x = (
            _ResNet20(nested(stored, "p"), nested(stored, "s")),
            stored["x"].transpose(0, 1, 4, 2, 3),
        )
    model = model.eval()
    batches = [
        (_tensor(xb), _tensor(yb.astype(np.int64))) for xb, yb in zip(x, stored["y"], strict=True)
    ]
    with torch.no_grad():
        port_error = float(np.max(np.abs(model(batches[0][0]).numpy() - stored["logits"])))
    return model, batches, stored, port_error


def pyhessian_side(model, batches, stored, tasks: list[str], starts: int) -> dict:
    """PyHessian 0.1 at its defaults: deflated power iteration, Hutchinson until stable."""
    from pyhessian import hessian

    computer = hessian(model, nn.CrossEntropyLoss(), dataloader=batches, cuda=False)
    count = [0]
    full_hvp = computer.dataloader_hv_product

    def counted(v):
        count[0] += 1
        return full_hvp(v)

    computer.dataloader_hv_product = counted
    reference, trace_reference = stored["reference_top"], float(stored["reference_trace"][0])

    def run(task: str, seed: int) -> tuple[int, float]:
        torch.manual_seed(seed)  # PyHessian draws its start vectors from the global generator
        count[0] = 0
        if task.startswith("top"):
            k = int(task[3:])
            values, _ = computer.eigenvalues(top_n=k)
            # Deflated power iteration finds the pairs in no guaranteed order: compare sorted.
            return count[0], relative_error(sorted(values, reverse=True), reference[:k])
        if task == "trace":
            estimate = np.mean(computer.trace())
            return count[0], relative_error(estimate, trace_reference)
        nodes, _ = computer.density(iter=DENSITY_STEPS, n_v=1)
        return count[0], relative_error(np.max(nodes), reference[0])

    return {task: _guarded(lambda s, t=task: run(t, s), starts) for task in tasks}


def _guarded(task_fn: Callable, starts: int) -> dict:
    try:
        return measure(task_fn, starts)
    except (RuntimeError, AttributeError) as error:  # PyHessian's density calls torch.eig
        return {"failed": str(error).splitlines()[0][:200]}


def _fewest_lanczos_steps(operator, k: int, reference) -> int:
    """The fewest Lanczos steps whose top-k Ritz values reach ``TOL`` from the warm-up start."""
    from hessian_eigenthings import lanczos_tridiagonal

    generator = torch.Generator().manual_seed(WARMUP_START)
    start = torch.randn(operator.size, dtype=operator.dtype, generator=generator)
    tridiagonal = lanczos_tridiagonal(operator, start, 80)
    alphas, betas = tridiagonal.alphas.double(), tridiagonal.betas.double()
    for steps in range(k + 1, tridiagonal.iterations + 1):
        matrix = torch.diag(alphas[:steps]) + torch.diag(betas[: steps - 1], 1)
        matrix = matrix + torch.diag(betas[: steps - 1], -1)
        ritz = torch.linalg.eigvalsh(matrix).flip(0)[:k]
        if relative_error(ritz.numpy(), reference[:k]) <= TOL:
            return steps
    return tridiagonal.iterations


def eigenthings_side(model, batches, stored, tasks: list[str], starts: int) -> dict:
    """hessian-eigenthings 1.0.0a5: Lanczos at the fewest steps that reach ``TOL`` (chosen
    with the reference on the warm-up start), Hutch++ and SLQ at jaxreg's budgets."""
    import hessian_eigenthings as he

    operator = he.HessianOperator(model, batches, he.supervised_loss(nn.CrossEntropyLoss()))
    reference, trace_reference = stored["reference_top"], float(stored["reference_trace"][0])
    out = {}
    for task in tasks:
        if task.startswith("top"):
            k = int(task[3:])
            steps = _fewest_lanczos_steps(operator, k, reference)

            def run(seed, k=k, steps=steps):
                result = he.lanczos(operator, k=k, max_iter=steps, which="LA", seed=seed)
                return steps, relative_error(result.eigenvalues.numpy(), reference[:k])

            out[task] = measure(run, starts) | {"steps": steps}
            continue
        if task == "trace":

            def run(seed):
                result = he.hutch_plus_plus(operator, num_matvecs=TRACE_HVPS, seed=seed)
                return TRACE_HVPS, relative_error(float(result.estimate), trace_reference)

        else:

            def run(seed):
                result = he.spectral_density(
                    operator,
                    num_runs=1,
                    lanczos_steps=DENSITY_STEPS,
                    num_grid_points=512,
                    seed=seed,
                )
                top = float(result.raw_eigenvalues.max())
                return DENSITY_STEPS, relative_error(top, reference[0])

        out[task] = measure(run, starts)
    return out


def curvlinops_side(model, batches, stored, tasks: list[str], starts: int) -> dict:
    """curvlinops 3.0: SciPy's ``eigsh`` (ARPACK) on the Hessian operator, at the largest
    ``tol`` that reaches ``TOL`` on the warm-up start; Hutch++ at jaxreg's budget."""
    import curvlinops
    from scipy.sparse.linalg import LinearOperator, eigsh

    params = [p for p in model.parameters() if p.requires_grad]
    hessian = curvlinops.HessianLinearOperator(
        model, nn.CrossEntropyLoss(), params, batches, check_deterministic=False
    )
    scipy_hessian = hessian.to_scipy()
    count = [0]

    def matvec(v):
        count[0] += 1
        return scipy_hessian @ v

    counted = LinearOperator(scipy_hessian.shape, matvec=matvec, dtype=scipy_hessian.dtype)
    reference, trace_reference = stored["reference_top"], float(stored["reference_trace"][0])
    size = scipy_hessian.shape[0]

    def top(k: int, tol: float, seed: int) -> tuple[int, float]:
        count[0] = 0
        start = np.random.default_rng(seed).standard_normal(size)
        values = eigsh(counted, k=k, which="LA", tol=tol, v0=start, return_eigenvectors=False)
        return count[0], relative_error(np.sort(values)[::-1], reference[:k])

    out = {}
    for task in tasks:
        if task.startswith("top"):
            k = int(task[3:])
            tol = next(
                (t for t in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5) if top(k, t, WARMUP_START)[1] <= TOL),
                1e-6,
            )
            out[task] = measure(lambda seed, k=k, tol=tol: top(k, tol, seed), starts) | {"tol": tol}
        elif task == "trace":

            def run(seed):
                torch.manual_seed(seed)  # hutchpp_trace draws from the global generator
                estimate = float(curvlinops.hutchpp_trace(hessian, TRACE_HVPS))
                return TRACE_HVPS, relative_error(estimate, trace_reference)

            out[task] = measure(run, starts)
    return out


SIDES = {
    "pyhessian": pyhessian_side,
    "eigenthings": eigenthings_side,
    "curvlinops": curvlinops_side,
}
VERSIONS = {
    "pyhessian": "pyhessian",
    "eigenthings": "hessian-eigenthings",
    "curvlinops": "curvlinops-for-pytorch",
}


def main() -> None:
    from importlib.metadata import version

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("side", choices=tuple(SIDES))
    parser.add_argument("--workload", type=Path, required=True)
    parser.add_argument("--tasks", default="top5")
    parser.add_argument("--starts", type=int, default=_protocol.MIN_STARTS)
    args = parser.parse_args()
    torch.set_num_threads(_protocol.thread_count())
    model, batches, stored, port_error = load(args.workload)
    result = SIDES[args.side](model, batches, stored, args.tasks.split(","), args.starts)
    result["port_max_logit_difference"] = port_error
    result["versions"] = {
        "torch": torch.__version__,
        args.side: version(VERSIONS[args.side]),
        "threads": torch.get_num_threads(),
    }
    _protocol.emit(result)


if __name__ == "__main__":
    main()
