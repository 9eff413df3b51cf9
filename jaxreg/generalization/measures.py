"""Generalization measures of one model, in the families of Jiang et al. (2020), ``vmap``-able.

Each function measures one model; ``jax.vmap`` over a stack of parameter trees
measures a sweep in one program (:func:`generalization_measures` runs them all).
Every measure is a *complexity*: larger is meant to predict a larger
generalization gap, so Kendall's τ with the gap should be positive.

A kernel is a parameter leaf with at least two axes; a convolution kernel is
flattened to ``(k·c_in, c_out)`` (Flax layout, ``channels_last=True``) or
``(c_out, c_in·k)`` (Equinox/PyTorch) before its spectral norm is taken, as
Jiang et al. do. Constant factors that depend only on the architecture (depth,
width) are left out: they do not change ranks among models of one architecture.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from jaxreg import spectra
from jaxreg._checks import check_key
from jaxreg.losses import classification_loss
from jaxreg.metrics import gradient_noise_scale
from jaxreg.nn.model import Apply
from jaxreg.sharpness import (
    epsilon_sharpness,
    hessian_trace,
    pac_bayes_flatness,
    sam_sharpness,
    top_eigenvalues,
)

__all__ = [
    "generalization_measures",
    "measure_sweep",
    "norm_measures",
    "output_margin",
    "path_norm",
    "sharpness_measures",
    "spectral_measures",
    "steps_to_loss",
]

FAMILIES = ("norm", "sharpness", "spectral", "optimization")


def _check_families(families: Sequence[str]) -> None:
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ValueError(f"families must be among {FAMILIES}, got {sorted(unknown)}")


def _flat_kernels(params: chex.ArrayTree, channels_last: bool) -> list[jax.Array]:
    kernels = [leaf for leaf in jax.tree.leaves(params) if jnp.ndim(leaf) >= 2]
    if not kernels:
        raise ValueError("params hold no kernel (a leaf with at least 2 axes)")
    if channels_last:
        return [k.reshape(-1, k.shape[-1]) for k in kernels]
    return [k.reshape(k.shape[0], -1) for k in kernels]


def _sq_spectral_norm(matrix: jax.Array) -> jax.Array:
    return jnp.linalg.svd(matrix, compute_uv=False)[0] ** 2


def norm_measures(
    params: chex.ArrayTree,
    init_params: chex.ArrayTree | None = None,
    *,
    margin: ArrayLike | None = None,
    channels_last: bool = True,
) -> dict[str, jax.Array]:
    """Norm-based measures over the ``d`` kernels ``W_l`` (Jiang et al. 2020, App. C.3).

    * ``log_product_frobenius`` ``Σ_l log‖W_l‖_F²``; ``log_sum_frobenius``
      ``log d + (1/d) Σ_l log‖W_l‖_F²`` (the log of ``d·(Π‖W_l‖_F²)^{1/d}``).
    * ``log_product_spectral`` and ``log_sum_spectral``: the same with ``‖W_l‖₂²``.
    * ``log_frobenius_over_spectral`` ``Σ_l log(‖W_l‖_F²/‖W_l‖₂²)`` (stable ranks).
    * ``log_parameter_norm`` ``log‖w‖²`` over every parameter.
    * with ``init_params``: ``distance_from_init`` ``‖w − w₀‖²`` over every
      parameter, and ``log_spectral_init`` ``Σ_l log‖W_l‖₂² + log Σ_l
      ‖W_l − W_l⁰‖_F²/‖W_l‖₂²`` (Bartlett et al. 2017's bound without its constants).
    * with ``margin`` γ (:func:`output_margin`): each ``log_product_*`` and
      ``log_spectral_init`` also ``_over_margin``, minus ``2 log γ``.

    Example:
      >>> params = {"a": 2.0 * jnp.eye(2), "b": jnp.ones((2, 1))}
      >>> m = norm_measures(params)
      >>> round(float(m["log_product_frobenius"]), 4)  # log 8 + log 2
      2.7726
      >>> round(float(m["log_frobenius_over_spectral"]), 4)  # log(8/4) + log(2/2)
      0.6931
    """
    kernels = _flat_kernels(params, channels_last)
    log_fro = jnp.stack([jnp.log(jnp.sum(k**2)) for k in kernels])
    spectral = jnp.stack([_sq_spectral_norm(k) for k in kernels])
    log_spec = jnp.log(spectral)
    depth = jnp.log(float(len(kernels)))
    out = {
        "log_product_frobenius": jnp.sum(log_fro),
        "log_sum_frobenius": depth + jnp.mean(log_fro),
        "log_product_spectral": jnp.sum(log_spec),
        "log_sum_spectral": depth + jnp.mean(log_spec),
        "log_frobenius_over_spectral": jnp.sum(log_fro - log_spec),
        "log_parameter_norm": jnp.log(optax.tree.norm(params, squared=True)),
    }
    if init_params is not None:
        difference = optax.tree.sub(params, init_params)
        out["distance_from_init"] = optax.tree.norm(difference, squared=True)
        moved = jnp.stack([jnp.sum(d**2) for d in _flat_kernels(difference, channels_last)])
        out["log_spectral_init"] = jnp.sum(log_spec) + jnp.log(jnp.sum(moved / spectral))
    if margin is not None:
        names = ("log_product_frobenius", "log_product_spectral", "log_spectral_init")
        for name in [n for n in names if n in out]:
            out[f"{name}_over_margin"] = out[name] - 2.0 * jnp.log(margin)
    return out


def path_norm(apply: Apply, params: chex.ArrayTree, input_shape: Sequence[int]) -> jax.Array:
    """The path norm ``Σ f_{w²}(1)`` (Neyshabur et al. 2015; Jiang et al. 2020, eq. 44).

    The network with every parameter squared, applied to an all-ones input: for
    a ReLU network without biases it is the sum over input–output paths of the
    product of the squared weights along the path. Meaningful for ReLU networks
    without normalization layers.

    Args:
      apply: ``apply(params, x)`` (eval mode).
      params: the parameters.
      input_shape: the shape of one example (without the batch axis).

    Example:
      >>> apply = lambda p, x, **_: jax.nn.relu(x @ p["w1"]) @ p["w2"]
      >>> params = {"w1": jnp.array([[1.0, -2.0]]), "w2": jnp.array([[3.0], [1.0]])}
      >>> float(path_norm(apply, params, (1,)))  # 1²·3² + 2²·1²
      13.0
    """
    squared = jax.tree.map(jnp.square, params)
    ones = jnp.ones((1, *input_shape), jnp.result_type(*jax.tree.leaves(params)))
    return jnp.sum(apply(squared, ones))


def output_margin(
    logits: ArrayLike, labels: ArrayLike, *, quantile: float = 0.1, weight: ArrayLike | None = None
) -> jax.Array:
    """The ``quantile`` of the output margin ``f_y(x) − max_{j≠y} f_j(x)`` (Jiang et al.: 10%).

    Rows with ``weight == 0`` (padding) are left out.

    Example:
      >>> logits = jnp.array([[3.0, 1.0], [0.0, 2.0], [1.0, 0.0]])
      >>> float(output_margin(logits, jnp.array([0, 1, 1]), quantile=0.5))
      2.0
    """
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    own = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
    others = jnp.where(jax.nn.one_hot(labels, logits.shape[1], dtype=bool), -jnp.inf, logits)
    margins = own - jnp.max(others, axis=1)
    if weight is not None:
        margins = jnp.where(jnp.asarray(weight) > 0, margins, jnp.nan)
    return jnp.nanquantile(margins, quantile)


def spectral_measures(
    params: chex.ArrayTree, *, channels_last: bool = True
) -> dict[str, jax.Array]:
    """WeightWatcher's layer averages (:mod:`jaxreg.spectra`): α, α̂, log stable rank, log λ_max.

    Example:
      >>> from flax import nnx
      >>> from jaxreg.nn import MLP, functional
      >>> _, params = functional(MLP((40, 64, 32, 10), rngs=nnx.Rngs(0)))
      >>> sorted(spectral_measures(params))
      ['alpha', 'alpha_weighted', 'log_spectral_norm', 'log_stable_rank']
    """
    layers = list(spectra.spectra(params, channels_last=channels_last).values())

    def mean(field):
        return jnp.mean(jnp.stack([field(layer) for layer in layers]))

    return {
        "alpha": mean(lambda s: s.alpha),
        "alpha_weighted": mean(lambda s: s.alpha_weighted),
        "log_stable_rank": mean(lambda s: jnp.log(s.stable_rank)),
        "log_spectral_norm": mean(lambda s: jnp.log10(s.lambda_max)),
    }


def sharpness_measures(
    loss_fn: Callable[[chex.ArrayTree, Any], jax.Array],
    params: chex.ArrayTree,
    data: Any,
    *,
    key: jax.Array,
    rho: float = 0.05,
    epsilon: float = 1e-3,
    pac_bayes_target: float = 0.1,
    lanczos_steps: int = 20,
    trace_samples: int = 24,
) -> dict[str, jax.Array]:
    """Sharpness of the training loss (:mod:`jaxreg.sharpness`), one value per measure.

    * ``epsilon_sharpness``: Keskar et al.'s ε-sharpness (``epsilon``, 10 ascent steps).
    * ``adaptive_sharpness``: worst-case adaptive (ASAM) ρ-sharpness, 5 ascent steps
      (Andriushchenko et al. 2023 find this the best sharpness predictor).
    * ``pac_bayes_inverse_sigma_sq``: ``1/σ²`` for the largest noise σ raising the
      loss by ``pac_bayes_target`` (Jiang et al.'s "PAC-Bayes flatness").
    * ``lambda_max``: the top Hessian eigenvalue (``lanczos_steps`` Lanczos steps).
    * ``hessian_trace``: Hutch++ with ``trace_samples`` HVPs.

    Example:
      >>> from jaxreg.data import batches
      >>> loss_fn = lambda w, b: 0.5 * jnp.sum(jnp.array([4.0, 2.0]) * w**2)
      >>> data = batches(jnp.zeros((2, 1)), jnp.zeros(2), 2)
      >>> m = sharpness_measures(loss_fn, jnp.zeros(2), data, key=jax.random.key(0))
      >>> round(float(m["lambda_max"]), 4), round(float(m["hessian_trace"]), 4)
      (4.0, 6.0)
    """
    check_key(key)
    parts = _sharpness_parts(
        rho=rho,
        epsilon=epsilon,
        pac_bayes_target=pac_bayes_target,
        lanczos_steps=lanczos_steps,
        trace_samples=trace_samples,
    )
    return {name: part(loss_fn, params, data, key) for name, part in parts.items()}


def _sharpness_parts(
    *,
    rho: float = 0.05,
    epsilon: float = 1e-3,
    pac_bayes_target: float = 0.1,
    lanczos_steps: int = 20,
    trace_samples: int = 24,
) -> dict[str, Callable[..., jax.Array]]:
    """Each sharpness measure as ``(loss_fn, params, data, key) -> scalar``, with its own key."""

    def adaptive(f, p, d, k):
        return sam_sharpness(f, p, d, rho, adaptive=True, num_steps=5, key=jax.random.fold_in(k, 0))

    def pac_bayes(f, p, d, k):
        return (
            1.0
            / pac_bayes_flatness(f, p, d, key=jax.random.fold_in(k, 1), target=pac_bayes_target)
            ** 2
        )

    def lambda_max(f, p, d, k):
        top = top_eigenvalues(
            f, p, d, key=jax.random.fold_in(k, 2), num_iters=lanczos_steps, tol=0.0
        )
        return top[0][0]

    def trace(f, p, d, k):
        return hessian_trace(f, p, d, key=jax.random.fold_in(k, 3), num_samples=trace_samples)[0]

    return {
        "epsilon_sharpness": lambda f, p, d, k: epsilon_sharpness(f, p, d, epsilon, num_steps=10),
        "adaptive_sharpness": adaptive,
        "pac_bayes_inverse_sigma_sq": pac_bayes,
        "lambda_max": lambda_max,
        "hessian_trace": trace,
    }


def steps_to_loss(losses: ArrayLike, threshold: ArrayLike, steps_per_epoch: int) -> jax.Array:
    """Optimizer steps until the training loss first reached ``threshold`` (inf if never).

    ``losses`` is the per-epoch training loss (``FitResult.history["train_loss"]``);
    the count is to the end of the first epoch at or below ``threshold`` (Jiang et
    al.'s "steps to 0.1 cross-entropy", at epoch resolution).

    Example:
      >>> float(steps_to_loss(jnp.array([1.0, 0.5, 0.08, 0.05]), 0.1, steps_per_epoch=10))
      30.0
    """
    reached = jnp.asarray(losses) <= threshold
    first = jnp.argmax(reached)
    return jnp.where(jnp.any(reached), (first + 1.0) * steps_per_epoch, jnp.inf)


def generalization_measures(
    apply: Apply,
    params: chex.ArrayTree,
    data: Any,
    *,
    key: jax.Array,
    init_params: chex.ArrayTree | None = None,
    families: Sequence[str] = FAMILIES,
    channels_last: bool = True,
    **sharpness_options: Any,
) -> dict[str, jax.Array]:
    """Every measure of one classifier on its training ``data``, as one flat dict.

    ``vmap`` works over a few models; for a sweep use :func:`measure_sweep`, which
    runs the Hessian-based measures as separate programs.

    Args:
      apply: ``apply(params, x)`` in eval mode (e.g. ``model.bind()``).
      params: the trained parameters.
      data: the training set as batches (:func:`jaxreg.data.batches`).
      key: PRNG key for the stochastic measures.
      init_params: the parameters the run started from (distance measures).
      families: any of ``"norm"`` (with the margin and path norm), ``"sharpness"``,
        ``"spectral"``, ``"optimization"`` (the gradient noise scale; steps to a
        loss come from the training history, :func:`steps_to_loss`).
      channels_last: the layout of convolution kernels.
      **sharpness_options: passed to :func:`sharpness_measures`.

    Example:
      >>> from flax import nnx
      >>> from jaxreg.data import batches
      >>> from jaxreg.nn import MLP, functional
      >>> apply, params = functional(MLP((4, 8, 3), rngs=nnx.Rngs(0)))
      >>> x = jax.random.normal(jax.random.key(0), (32, 4)); y = jnp.arange(32) % 3
      >>> m = generalization_measures(apply, params, batches(x, y, 16), key=jax.random.key(1),
      ...                             families=("norm", "spectral"))
      >>> len(m), bool(m["log_sum_spectral"] < m["log_product_spectral"] + jnp.log(2.0))
      (14, True)
    """
    _check_families(families)
    check_key(key)
    loss_fn = classification_loss(apply)
    out: dict[str, jax.Array] = {}
    if "norm" in families:
        logits = jax.vmap(lambda x: apply(params, x))(data["x"])  # no loop: see measure_sweep
        margin = output_margin(
            logits.reshape(-1, logits.shape[-1]),
            data["y"].reshape(-1),
            weight=data["weight"].reshape(-1) if "weight" in data else None,
        )
        out.update(norm_measures(params, init_params, margin=margin, channels_last=channels_last))
        out["log_path_norm"] = jnp.log(path_norm(apply, params, data["x"].shape[2:]))
        out["inverse_margin"] = 1.0 / margin**2
    if "sharpness" in families:
        out.update(sharpness_measures(loss_fn, params, data, key=key, **sharpness_options))
    if "spectral" in families:
        out.update(spectral_measures(params, channels_last=channels_last))
    if "optimization" in families:
        noise = gradient_noise_scale(loss_fn, params, data)
        out["gradient_noise_scale"] = noise.simple_noise_scale
    return out


def _leading(tree: chex.ArrayTree) -> int:
    sizes = {jnp.shape(leaf)[0] for leaf in jax.tree.leaves(tree) if jnp.ndim(leaf) > 0}
    if len(sizes) != 1:
        raise ValueError(f"params must be a stack with one leading model axis, got sizes {sizes}")
    return sizes.pop()


def measure_sweep(
    apply: Apply,
    params: chex.ArrayTree,
    data: Any,
    *,
    key: jax.Array,
    init_params: chex.ArrayTree | None = None,
    families: Sequence[str] = FAMILIES,
    channels_last: bool = True,
    **sharpness_options: Any,
) -> dict[str, np.ndarray]:
    """:func:`generalization_measures` of every model in a stack, each measure vmapped over all.

    The norm and spectral measures run as one ``jit(vmap(…))`` program over every
    model; the gradient noise scale and each sharpness measure as one more each, run
    one after another. One program running several loops of many models side by side
    can deadlock XLA:CPU (jaxlib 0.10, seen with 72 models; docs/conventions.md); one
    loop per program does not.
    Model ``i`` gets ``split(key, n)[i]``, so its values equal
    ``generalization_measures(…, key=split(key, n)[i])`` on that model alone. The
    compiled programs are kept (per ``apply`` and options), so a second call with the
    same ``apply`` and shapes does not compile again.

    Args:
      apply: ``apply(params, x)`` in eval mode, shared by every model.
      params: the models' parameters stacked on a leading axis (a sweep's
        ``metrics["params"]``, flattened to one model axis).
      data: the training batches (:func:`jaxreg.data.batches`), shared.
      key: PRNG key.
      init_params: the initial parameters, stacked the same way (optional).
      families: as in :func:`generalization_measures`.
      channels_last: the layout of convolution kernels.
      **sharpness_options: passed to :func:`sharpness_measures`.

    Returns:
      ``{measure: (n,) array}`` on the host.

    Example:
      >>> from flax import nnx
      >>> from jaxreg.data import batches
      >>> from jaxreg.nn import MLP, functional
      >>> apply = functional(MLP((4, 8, 3), rngs=nnx.Rngs(0)))[0]
      >>> stack = jax.tree.map(lambda *p: jnp.stack(p),
      ...     *[functional(MLP((4, 8, 3), rngs=nnx.Rngs(s)))[1] for s in range(5)])
      >>> x = jax.random.normal(jax.random.key(0), (32, 4)); y = jnp.arange(32) % 3
      >>> out = measure_sweep(apply, stack, batches(x, y, 16), key=jax.random.key(1),
      ...                     families=("norm", "spectral", "optimization"))
      >>> out["alpha"].shape, len(out)
      ((5,), 15)
    """
    check_key(key)
    _check_families(families)
    keys = jax.random.split(key, _leading(params))
    cheap = tuple(f for f in families if f != "sharpness")
    options = tuple(sorted(sharpness_options.items()))
    programs = _sweep_programs(apply, cheap, "sharpness" in families, channels_last, options)
    out: dict[str, np.ndarray] = {}
    for program in programs.values():
        # One program at a time: dispatched together, they could run side by side.
        out.update(jax.device_get(program(params, init_params, keys, data)))
    return {name: np.asarray(value) for name, value in out.items()}


@functools.lru_cache(maxsize=16)
def _sweep_programs(apply: Apply, cheap: tuple, sharpness: bool, channels_last: bool, options):
    """The compiled programs of :func:`measure_sweep`, kept so a second call reuses them.

    The loop-free families (norm, spectral) share one program; every measure that
    runs a loop (the gradient noise scale, each sharpness measure) gets its own.
    """
    programs = {}
    groups = [tuple(f for f in cheap if f in ("norm", "spectral"))]
    groups += [("optimization",)] if "optimization" in cheap else []
    for group in [g for g in groups if g]:

        def measure(p, p0, k, data, group=group):
            return generalization_measures(
                apply, p, data, key=k, init_params=p0, families=group, channels_last=channels_last
            )

        programs[group] = jax.jit(jax.vmap(measure, in_axes=(0, 0, 0, None)))
    if sharpness:
        loss_fn = classification_loss(apply)
        for name, part in _sharpness_parts(**dict(options)).items():

            def one(p, p0, k, data, part=part, name=name):
                del p0
                return {name: part(loss_fn, p, data, k)}

            programs[name] = jax.jit(jax.vmap(one, in_axes=(0, 0, 0, None)))
    return programs
