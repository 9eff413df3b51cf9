"""The kfac-jax side of ``benchmarks/laplace.py``: its exact-GGN KFAC factors of the MLP.

Run in its own process and venv (kfac-jax 0.0.8 traces jaxprs with JAX internals
that newer JAX releases changed; it runs on jax 0.6, e.g. ``pip install jax==0.6.2
jaxlib==0.6.2 kfac-jax==0.0.8 optax==0.2.4 chex==0.1.89 dm-tree immutabledict``).
kfac-jax imports distrax only for its losses' sampling distributions, which the
exact (``"ggn_exact"``) estimate never uses; without distrax installed a stub
module stands in (its ``Categorical`` gives the softmax probabilities, all the
exact factor reads). Reads ``--inputs`` (the same ``.npz`` the laplace-torch side
reads), writes ``--output`` (JSON): per dense layer kfac-jax's two factors.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import types

import numpy as np


class _Categorical:
    """What the softmax loss's exact GGN factor reads of ``distrax.Categorical``: ``probs``."""

    def __init__(self, logits, dtype=None):
        del dtype
        self.logits = logits

    @property
    def probs(self):
        import jax

        return jax.nn.softmax(self.logits, axis=-1)


def _import_kfac_jax():
    if importlib.util.find_spec("distrax") is None:
        stub = types.ModuleType("distrax")
        for name in ("Distribution", "MultivariateNormalDiag", "Bernoulli", "OneHotCategorical"):
            setattr(stub, name, type(name, (), {}))
        stub.Categorical = _Categorical
        sys.modules["distrax"] = stub
    import kfac_jax

    return kfac_jax


def factors(inputs) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import optax

    kfac_jax = _import_kfac_jax()
    params = {
        "hidden": {"kernel": jnp.asarray(inputs["hk"]), "bias": jnp.asarray(inputs["hb"])},
        "out": {"kernel": jnp.asarray(inputs["ok"]), "bias": jnp.asarray(inputs["ob"])},
    }
    x, y = jnp.asarray(inputs["x"]), jnp.asarray(inputs["y"])

    def loss(p, batch):
        xb, yb = batch
        hidden = jax.nn.relu(xb @ p["hidden"]["kernel"] + p["hidden"]["bias"])
        logits = hidden @ p["out"]["kernel"] + p["out"]["bias"]
        kfac_jax.register_softmax_cross_entropy_loss(logits, yb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    estimator = kfac_jax.BlockDiagonalCurvature(loss)
    state = estimator.init(jax.random.key(0), (params, (x, y)), None, None)
    state = estimator.update_curvature_matrix_estimate(
        state, 0.0, 1.0, 0.0, x.shape[0], jax.random.key(1), (params, (x, y)),
        estimation_mode="ggn_exact",
    )  # fmt: skip
    out = {"kfac_jax": kfac_jax.__version__, "jax": jax.__version__, "blocks": []}
    for block, block_state in zip(estimator.blocks, state.blocks_states, strict=True):
        out["blocks"].append({
            "type": type(block).__name__,
            "factors": [np.asarray(f.value).tolist() for f in block_state.factors],
        })  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    result = factors(dict(np.load(args.inputs)))
    with open(args.output, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
