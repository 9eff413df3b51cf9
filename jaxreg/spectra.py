"""Weight-matrix spectra: heavy-tailed self-regularization from the weights alone, jit-able.

The empirical spectral density (ESD) of a layer is the set of eigenvalues
``λ = σ²`` of ``WᵀW``, ``σ`` the singular values of its kernel ``W``. Martin &
Mahoney (2021, "Implicit self-regularization in deep neural networks") read
training as the ESD's tail growing heavier: a power law ``p(λ) ∝ λ^{-α}``
above some ``x_min``, with α between 2 and 6 for well-trained layers. This is
the computation WeightWatcher (0.7) does, as pure JAX functions that run under
``jit`` and ``vmap`` — for every member of a sweep at once, or every epoch
inside :func:`jaxreg.fit` (its ``params_metrics``):

* :func:`kernel_matrices` — a dense kernel is one matrix; a convolution's
  kernel is one ``(c_in, c_out)`` matrix per spatial position, as WeightWatcher
  slices it (its ``conv2d_norm`` rescaling is not applied: run WeightWatcher
  with ``conv2d_norm=False`` to compare).
* :func:`power_law_fit` — α by the continuous maximum-likelihood estimator of
  Clauset, Shalizi & Newman (2009), ``α = 1 + n / Σ ln(λ_i / x_min)`` over the
  tail, with ``x_min`` chosen among the eigenvalues to minimise the
  Kolmogorov–Smirnov distance (WeightWatcher's default fit; its separate
  heuristic for fewer than 20 eigenvalues is not reproduced).
* :func:`layer_spectrum` — α, weighted α̂ = α·log₁₀λ_max, stable rank, norms,
  the Marchenko–Pastur bulk edge and the spikes above it, and with a ``key``
  the same for the kernel with its entries shuffled ("correlation traps").
* :func:`spectra` — :func:`layer_spectrum` for every kernel of a parameter tree.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxreg._checks import check_key
from jaxreg.masks import leaf_path

__all__ = [
    "LayerSpectrum",
    "PowerLawFit",
    "eigenvalues",
    "kernel_matrices",
    "layer_spectrum",
    "power_law_fit",
    "spectra",
]

# Tracy–Widom scales above the Marchenko–Pastur edge before an eigenvalue counts as a
# spike: the largest eigenvalue of a pure-noise matrix exceeds 3 scales with
# probability below 0.1% (TW₁'s 99.9% quantile is about 2.9; Johnstone 2001).
_TRACY_WIDOM_SCALES = 3.0
# Up to this many eigenvalues every x_min candidate is fitted at once (n² memory, no
# loop); above it the candidates are scanned in blocks of 128 (linear memory).
_DENSE_LIMIT = 1024


def kernel_matrices(kernel: ArrayLike, *, channels_last: bool = True) -> jax.Array:
    """The matrices whose singular values make a layer's spectrum, stacked ``(slices, a, b)``.

    Args:
      kernel: a dense kernel ``(a, b)`` (either orientation: the spectrum is the
        same), or a convolution kernel with two channel axes and any number of
        spatial axes.
      channels_last: the convolution layout: ``(*spatial, c_in, c_out)`` as Flax
        writes it (True), or ``(c_out, c_in, *spatial)`` as Equinox and PyTorch do.

    Returns:
      ``(1, a, b)`` for a dense kernel; ``(prod(spatial), c_in, c_out)`` (or
      ``(…, c_out, c_in)``) for a convolution: one matrix per spatial position.

    Example:
      >>> kernel_matrices(jnp.ones((3, 3, 8, 16))).shape
      (9, 8, 16)
      >>> kernel_matrices(jnp.ones((16, 8, 3, 3)), channels_last=False).shape
      (9, 16, 8)
    """
    kernel = jnp.asarray(kernel)
    if kernel.ndim < 2:
        raise ValueError(f"kernel must have at least 2 axes, got shape {kernel.shape}")
    if kernel.ndim == 2:
        return kernel[None]
    if channels_last:
        return kernel.reshape(-1, *kernel.shape[-2:])
    return jnp.moveaxis(kernel.reshape(*kernel.shape[:2], -1), -1, 0)


def eigenvalues(kernel: ArrayLike, *, channels_last: bool = True) -> jax.Array:
    """The layer's ESD: ``σ²`` of every matrix of :func:`kernel_matrices`, sorted ascending.

    Example:
      >>> eigenvalues(jnp.diag(jnp.array([3.0, 1.0, 2.0]))).tolist()
      [1.0, 4.0, 9.0]
    """
    return _esd(kernel_matrices(kernel, channels_last=channels_last))


def _esd(matrices: jax.Array) -> jax.Array:
    singular = jnp.linalg.svd(matrices, compute_uv=False)
    return jnp.sort(jnp.ravel(singular**2))


class PowerLawFit(NamedTuple):
    """A power law fitted to the tail of a spectrum.

    Attributes:
      alpha: the exponent α of ``p(λ) ∝ λ^{-α}`` for ``λ ≥ xmin``.
      xmin: where the tail starts (one of the eigenvalues).
      ks_distance: Kolmogorov–Smirnov distance between the tail and the fit.
      num_tail: eigenvalues in the tail (``λ ≥ xmin``).
      sigma: the MLE's standard error ``(α − 1)/√num_tail``.

    Example:
      >>> fit = power_law_fit(jnp.array([1.0, 2.0, 4.0, 8.0, 16.0]))
      >>> fit._fields
      ('alpha', 'xmin', 'ks_distance', 'num_tail', 'sigma')
      >>> float(fit.xmin), int(fit.num_tail)
      (1.0, 5)
    """

    alpha: jax.Array
    xmin: jax.Array
    ks_distance: jax.Array
    num_tail: jax.Array
    sigma: jax.Array


def _tail_fit(x: jax.Array, log_x: jax.Array, valid: jax.Array, i: jax.Array):
    """α and the KS distance for ``xmin = x[i]`` (``x`` sorted ascending)."""
    index = jnp.arange(x.shape[0])
    in_tail = (index >= i) & valid
    count = jnp.sum(in_tail)
    # Σ ln(λ/xmin) summed directly, not as a difference of suffix sums (no cancellation).
    alpha = 1.0 + count / jnp.sum(jnp.where(in_tail, log_x - log_x[i], 0.0))
    fitted = 1.0 - jnp.exp((1.0 - alpha) * (log_x - log_x[i]))
    empirical = (index - i) / count
    distance = jnp.max(jnp.where(in_tail, jnp.abs(fitted - empirical), 0.0))
    return alpha, distance, count


def power_law_fit(eigenvalues: ArrayLike, *, threshold: float = 1e-5) -> PowerLawFit:
    """Fit ``p(λ) ∝ λ^{-α}`` to a spectrum's tail (Clauset, Shalizi & Newman 2009).

    For every candidate ``x_min`` (each eigenvalue above ``threshold`` but the
    largest), α is the continuous MLE over ``λ ≥ x_min``; the fit kept is the one
    whose tail is closest to its power law in Kolmogorov–Smirnov distance.
    Eigenvalues at or below ``threshold`` (numerically zero) are ignored, as
    WeightWatcher does. Up to 1,024 eigenvalues every candidate is fitted at once
    (memory quadratic in their number); above that the candidates are scanned in
    blocks of 128 (linear memory).

    Args:
      eigenvalues: a 1-D spectrum (any order).
      threshold: eigenvalues at or below it are left out.

    Returns:
      A :class:`PowerLawFit`.

    Example:
      >>> u = jax.random.uniform(jax.random.key(0), (4000,))
      >>> pareto = (1.0 - u) ** (-1.0 / 2.5)  # p(x) ∝ x^{-3.5} above 1
      >>> fit = power_law_fit(pareto)
      >>> round(float(fit.alpha), 1)
      3.5
    """
    values = jnp.ravel(jnp.asarray(eigenvalues))
    if values.shape[0] < 2:
        raise ValueError(f"eigenvalues must hold at least 2 values, got {values.shape[0]}")
    return _power_law_fit(values, threshold)


@jax.jit
def _power_law_fit(values: jax.Array, threshold: float) -> PowerLawFit:
    """:func:`power_law_fit`, compiled once per spectrum size: run op by op, its candidate
    fits cost seconds of small compiles on a first call."""
    x = jnp.sort(values)
    valid = x > threshold
    log_x = jnp.log(jnp.where(valid, x, 1.0))
    candidates = jnp.arange(x.shape[0])

    def fit_at(i):
        return _tail_fit(x, log_x, valid, i)

    if x.shape[0] <= _DENSE_LIMIT:
        # No loop: several loops in one vmapped program can hang XLA:CPU (docs/conventions.md).
        alpha, distance, count = jax.vmap(fit_at)(candidates)
    else:
        alpha, distance, count = jax.lax.map(fit_at, candidates, batch_size=128)
    usable = valid & (candidates < x.shape[0] - 1)
    # WeightWatcher leaves D = 1 where α ≤ 1; candidates below the threshold never win.
    distance = jnp.where(alpha > 1, distance, 1.0)
    distance = jnp.where(usable, distance, 2.0)
    best = jnp.argmin(distance)
    sigma = (alpha[best] - 1.0) / jnp.sqrt(count[best])
    return PowerLawFit(alpha[best], x[best], distance[best], count[best], sigma)


class LayerSpectrum(NamedTuple):
    """What one kernel's spectrum says (WeightWatcher's names in brackets).

    Attributes:
      alpha: power-law exponent of the ESD's tail [alpha].
      alpha_weighted: ``α · log₁₀ λ_max`` [alpha_weighted].
      log_alpha_norm: ``log₁₀ Σ λ^α`` [log_alpha_norm].
      ks_distance: the power-law fit's KS distance [D].
      xmin: where the fitted tail starts [xmin].
      lambda_max: the largest eigenvalue, ``σ_max²`` [spectral_norm].
      spectral_norm: ``σ_max`` (the operator 2-norm).
      frobenius_norm: ``√Σλ``; WeightWatcher's [norm] is its square.
      stable_rank: ``Σλ / λ_max`` [stable_rank].
      bulk_edge: the Marchenko–Pastur edge ``N s² (1 + 1/√Q)²`` for the kernel's
        entry variance ``s²`` and aspect ratio ``Q = N/M`` (as if the weights were noise).
      num_spikes: eigenvalues more than 3 Tracy–Widom scales above the edge (learned structure).
      rand_lambda_max: λ_max after shuffling the kernel's entries (NaN without ``key``).
      num_traps: shuffled-kernel eigenvalues above the same threshold: "correlation
        traps", large entries that randomization cannot remove (NaN without ``key``).

    Example:
      >>> s = layer_spectrum(jnp.diag(jnp.array([3.0, 1.0, 2.0])))
      >>> round(float(s.lambda_max), 4), round(float(s.stable_rank), 4)  # 14 / 9
      (9.0, 1.5556)
    """

    alpha: jax.Array
    alpha_weighted: jax.Array
    log_alpha_norm: jax.Array
    ks_distance: jax.Array
    xmin: jax.Array
    lambda_max: jax.Array
    spectral_norm: jax.Array
    frobenius_norm: jax.Array
    stable_rank: jax.Array
    bulk_edge: jax.Array
    num_spikes: jax.Array
    rand_lambda_max: jax.Array
    num_traps: jax.Array


def _spike_threshold(matrices: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The Marchenko–Pastur edge and the spike threshold, for ``WᵀW`` of one slice."""
    n, m = max(matrices.shape[1:]), min(matrices.shape[1:])
    variance = jnp.mean(matrices.astype(jnp.result_type(matrices.dtype, float)) ** 2)
    edge = variance * (n**0.5 + m**0.5) ** 2
    # Johnstone (2001): λ_max of a white Wishart matrix ≈ edge + scale · TW₁.
    scale = variance * (n**0.5 + m**0.5) * (n**-0.5 + m**-0.5) ** (1.0 / 3.0)
    return edge, edge + _TRACY_WIDOM_SCALES * scale


def layer_spectrum(
    kernel: ArrayLike,
    *,
    key: jax.Array | None = None,
    channels_last: bool = True,
    threshold: float = 1e-5,
) -> LayerSpectrum:
    """The spectral summary of one kernel (see :class:`LayerSpectrum`).

    Args:
      kernel: a dense or convolution kernel (:func:`kernel_matrices`).
      key: with a key, the kernel's entries are also shuffled and the shuffled
        spectrum compared with the Marchenko–Pastur edge (correlation traps).
      channels_last: the convolution layout (:func:`kernel_matrices`).
      threshold: eigenvalues at or below it are left out of the power-law fit.

    Example:
      >>> w = jax.random.normal(jax.random.key(0), (400, 100))
      >>> s = layer_spectrum(w, key=jax.random.key(1))
      >>> int(s.num_spikes), int(s.num_traps)  # pure noise: nothing above the bulk
      (0, 0)
      >>> spiked = w + 40.0 * jnp.outer(jnp.ones(400), jnp.ones(100)) / 200.0
      >>> int(layer_spectrum(spiked).num_spikes)  # one learned direction
      1
    """
    if key is not None:
        check_key(key)
    return _layer_spectrum(jnp.asarray(kernel), key, threshold, channels_last=channels_last)


@partial(jax.jit, static_argnames="channels_last")
def _layer_spectrum(kernel, key, threshold, *, channels_last: bool) -> LayerSpectrum:
    """:func:`layer_spectrum`, compiled once per kernel shape (op by op, the power-law fit
    alone costs seconds of small compiles on a first call)."""
    matrices = kernel_matrices(kernel, channels_last=channels_last)
    values = _esd(matrices)
    fit = _power_law_fit(values, threshold)
    lambda_max, total = values[-1], jnp.sum(values)
    edge, spike = _spike_threshold(matrices)
    nan = jnp.full((), jnp.nan, values.dtype)
    rand_lambda_max, num_traps = nan, nan
    if key is not None:
        shuffled = jax.random.permutation(key, jnp.ravel(matrices)).reshape(matrices.shape)
        rand_values = _esd(shuffled)
        rand_lambda_max = rand_values[-1]
        num_traps = jnp.sum(rand_values > spike).astype(values.dtype)
    return LayerSpectrum(
        alpha=fit.alpha,
        alpha_weighted=fit.alpha * jnp.log10(lambda_max),
        log_alpha_norm=jnp.log10(jnp.sum(jnp.where(values > threshold, values, 0.0) ** fit.alpha)),
        ks_distance=fit.ks_distance,
        xmin=fit.xmin,
        lambda_max=lambda_max,
        spectral_norm=jnp.sqrt(lambda_max),
        frobenius_norm=jnp.sqrt(total),
        stable_rank=total / lambda_max,
        bulk_edge=edge,
        num_spikes=jnp.sum(values > spike).astype(values.dtype),
        rand_lambda_max=rand_lambda_max,
        num_traps=num_traps,
    )


def spectra(
    params: chex.ArrayTree,
    *,
    key: jax.Array | None = None,
    channels_last: bool = True,
    min_size: int = 2,
) -> dict[str, LayerSpectrum]:
    """:func:`layer_spectrum` of every kernel in ``params``, keyed by its path.

    A kernel is a leaf with at least two axes, each of size ``min_size`` or more
    (biases and normalization scales are vectors and are skipped). Runs under
    ``vmap``: over a stack of parameter trees it returns each field per model.

    Args:
      params: a parameter pytree.
      key: shuffled-kernel comparison (see :func:`layer_spectrum`), a key per layer.
      channels_last: the layout of convolution kernels (:func:`kernel_matrices`).
      min_size: the smallest matrix side that counts as a layer.

    Example:
      >>> from flax import nnx
      >>> from jaxreg.nn import MLP, functional
      >>> _, params = functional(MLP((40, 64, 10), rngs=nnx.Rngs(0)))
      >>> layers = spectra(params)
      >>> sorted(layers), layers["layers/1/kernel"].stable_rank.shape
      (['layers/0/kernel', 'layers/1/kernel'], ())
    """
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    kernels = {
        leaf_path(path): leaf
        for path, leaf in leaves
        if jnp.ndim(leaf) >= 2
        and min(kernel_matrices(leaf, channels_last=channels_last).shape[1:]) >= min_size
    }
    if not kernels:
        raise ValueError("params hold no kernel (a leaf with at least 2 axes)")
    keys = [None] * len(kernels) if key is None else list(jax.random.split(key, len(kernels)))
    return {
        name: layer_spectrum(kernel, key=k, channels_last=channels_last)
        for (name, kernel), k in zip(kernels.items(), keys, strict=True)
    }
