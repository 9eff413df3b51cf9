"""Lanczos with full reorthogonalization and adaptive stopping, and power iteration.

All iterations run inside one compiled loop (no Python unrolling), on the
flattened parameter vector. Full reorthogonalization keeps the Krylov basis
orthonormal in float32: after the three-term recurrence, one classical
Gram–Schmidt pass over the basis vectors in use, repeated only when it cancels
more than 1/√2 of the norm ("twice is enough"). For more accuracy run under
``jax.enable_x64`` with float64 params.

The eigenvalue routines stop adaptively: every ``check_every`` steps they
compute the Ritz pairs of the tridiagonal matrix so far, with Lanczos's
residual bound ``r_i = |β_m s_{m,i}| = ‖H y_i − θ_i y_i‖`` of each wanted pair.
Each ``θ_i`` lies within ``r_i`` of an eigenvalue, and within ``r_i²/δ_i`` when
the rest of the spectrum is at least ``δ_i`` away (Kato–Temple; δ is estimated
from the other Ritz values). They stop once ``error_bound = min(r, r²/δ)`` of
every wanted pair is below ``tol·|θ_i|``. The cap ``num_iters`` bounds the work;
``num_hvps`` reports what was spent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxreg._checks import check_key
from jaxreg.masks import MaskLike, resolve
from jaxreg.sharpness._flat import flattened_operator
from jaxreg.sharpness.hvp import LossFn, hvp

__all__ = [
    "LanczosResult",
    "PowerIterationResult",
    "block_top_eigenvalues",
    "lanczos",
    "min_eigenvalue",
    "power_iteration",
    "top_eigenvalues",
]


class LanczosResult(NamedTuple):
    """Output of :func:`lanczos` on flat vectors.

    Attributes:
      alphas: diagonal of the tridiagonal matrix ``T`` ``(m,)``.
      betas: off-diagonal ``(m,)``; ``betas[-1]`` is the residual norm.
      basis: orthonormal Krylov basis ``(m, n)``.

    Example:
      >>> a = jnp.diag(jnp.array([3.0, 1.0, 0.5]))
      >>> out = lanczos(lambda v: a @ v, jnp.ones(3), 3)
      >>> out.alphas.shape, out.basis.shape
      ((3,), (3, 3))
      >>> bool(jnp.allclose(out.basis @ out.basis.T, jnp.eye(3), atol=1e-5))  # orthonormal
      True
    """

    alphas: jax.Array
    betas: jax.Array
    basis: jax.Array

    def tridiagonal(self) -> jax.Array:
        m = self.alphas.shape[0]
        off = self.betas[: m - 1]
        return jnp.diag(self.alphas) + jnp.diag(off, 1) + jnp.diag(off, -1)


def lanczos(
    matvec: Callable[[jax.Array], jax.Array], start: jax.Array, num_iters: int
) -> LanczosResult:
    """``num_iters`` Lanczos steps on a symmetric ``matvec`` from ``start`` (flat vectors).

    Example:
      >>> a = jnp.diag(jnp.array([3.0, 1.0, 0.5]))
      >>> out = lanczos(lambda v: a @ v, jnp.ones(3), 3)
      >>> [round(v, 4) for v in jnp.linalg.eigvalsh(out.tridiagonal()).tolist()]
      [0.5, 1.0, 3.0]
    """
    n = start.shape[0]
    if not 1 <= num_iters <= n:
        raise ValueError(f"num_iters must lie in [1, {n}] (the dimension), got {num_iters}")
    init = _lanczos_init(start, num_iters)
    basis, alphas, betas = jax.lax.fori_loop(0, num_iters, _lanczos_step(matvec), init)
    return LanczosResult(alphas, betas, basis[:num_iters])


def _tiny(dtype) -> jax.Array:
    return jnp.finfo(dtype).eps * 10


def _lanczos_init(start: jax.Array, num_iters: int):
    """Basis ``(num_iters + 1, n)`` holding the normalized start, zero alphas and betas."""
    dtype = start.dtype
    basis = jnp.zeros((num_iters + 1, start.shape[0]), dtype)
    basis = basis.at[0].set(start / jnp.linalg.norm(start))
    return basis, jnp.zeros(num_iters, dtype), jnp.zeros(num_iters, dtype)


def _lanczos_step(matvec):
    """One Lanczos step ``i`` with full reorthogonalization, for ``fori_loop``."""

    def step(i, state):
        basis, alphas, betas = state
        tiny = _tiny(basis.dtype)
        v = basis[i]
        w = matvec(v)
        alpha = jnp.vdot(w, v)
        w, beta = _reorthogonalize(basis, w)
        next_v = jnp.where(beta > tiny, w / jnp.where(beta > tiny, beta, 1.0), 0.0)
        return basis.at[i + 1].set(next_v), alphas.at[i].set(alpha), betas.at[i].set(beta)

    return step


def _reorthogonalize(basis: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``w`` minus its projection on the rows of ``basis`` (rows not yet used are 0), and its
    norm, by :func:`_twice_is_enough` classical Gram–Schmidt."""
    return _twice_is_enough(lambda w: w - basis.T @ (basis @ w), w)


def _twice_is_enough(project_out: Callable, w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``project_out(w)`` and its norm, projected a second time only when the first pass
    cancelled more than 1/√2 of ``w``'s norm (Daniel–Gragg–Kaufman–Stewart: "twice is
    enough") — each pass reads the basis, which dominates a step's cost after the HVP."""
    before = jnp.linalg.norm(w)
    w = project_out(w)
    after = jnp.linalg.norm(w)

    def again(w):
        w = project_out(w)
        return w, jnp.linalg.norm(w)

    return jax.lax.cond(after < 0.7071 * before, again, lambda w: (w, after), w)


def _error_bound(theta: jax.Array, wanted: jax.Array, residual: jax.Array) -> jax.Array:
    """``min(r, r²/δ)`` per wanted Ritz value, ``δ`` its distance to the other Ritz values."""
    distance = jnp.abs(theta[wanted][:, None] - theta[None, :])
    distance = jnp.where(jnp.arange(theta.shape[0])[None, :] == wanted[:, None], jnp.inf, distance)
    gap = jnp.min(distance, axis=1)
    return jnp.minimum(residual, residual**2 / jnp.where(gap > 0, gap, jnp.inf))


def _default_iters(k: int, n: int, num_iters: int | None) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"k must be an int in [1, {n}] (the number of parameters), got {k!r}")
    if num_iters is None:
        # The cap sets the basis memory and the per-step reorthogonalization cost, even
        # when the loop stops early: keep it modest and raise num_iters for hard spectra.
        return min(n, max(2 * k + 20, 50))
    if num_iters < k:
        raise ValueError(f"num_iters={num_iters} gives at most {num_iters} eigenvalues; k={k}")
    return min(num_iters, n)


def _check_tol(tol: float, check_every: int) -> None:
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0 (0 runs every step up to num_iters), got {tol!r}")
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
        raise ValueError(f"check_every must be a positive int, got {check_every!r}")


def _wanted_ritz(alphas, betas, m, k: int, largest: bool):
    """The ``k`` wanted Ritz pairs of the leading ``m×m`` block of the (static-size)
    tridiagonal matrix (see :func:`_dense_wanted_ritz`)."""
    off = betas[:-1]
    tridiagonal = jnp.diag(alphas) + jnp.diag(off, 1) + jnp.diag(off, -1)
    values, coefficients, bound, error = _dense_wanted_ritz(tridiagonal, m, betas[m - 1], largest)
    return values[:k], coefficients[:, :k], bound[:k], error[:k]


_BLOCK_ROWS = 16


def _ritz(
    matvec,
    start: jax.Array,
    num_iters: int,
    k: int,
    largest: bool,
    *,
    tol: float = 1e-4,
    check_every: int = 1,
    explicit_residuals: bool = False,
) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """Adaptive Lanczos: at most ``num_iters`` steps, stopping when every wanted pair's
    error bound is below ``tol`` relative to its Ritz value.

    One ``while_loop`` step per HVP, so the matvec is compiled once. The basis is
    kept in blocks of 16 rows and each step reorthogonalizes only against the
    blocks in use (``lax.cond`` per block): a run that stops after 14 steps should
    not read a basis of 51 vectors every step.
    """
    _check_tol(tol, check_every)
    tiny = _tiny(start.dtype)
    rows = num_iters + 1
    offsets = list(range(0, rows, _BLOCK_ROWS))
    first = start / jnp.linalg.norm(start)
    blocks = tuple(
        jnp.zeros((min(_BLOCK_ROWS, rows - offset), start.shape[0]), start.dtype)
        for offset in offsets
    )
    blocks = (blocks[0].at[0].set(first), *blocks[1:])

    def project_out(blocks, m, w):
        for offset, block in zip(offsets, blocks, strict=True):
            w = jax.lax.cond(
                offset <= m, lambda w, block=block: w - block.T @ (block @ w), lambda w: w, w
            )
        return w

    def unfinished(state):
        *_, m, done = state
        return (m < num_iters) & ~done

    def advance(state):
        blocks, v, previous, alphas, betas, m, _ = state
        w = matvec(v)
        alpha = jnp.vdot(w, v)
        # The three-term recurrence removes the large components; classical Gram–Schmidt
        # over the blocks in use then removes the rounding drift (a second pass is rare).
        w = w - alpha * v - jnp.where(m > 0, betas[m - 1], 0) * previous
        w, beta = _twice_is_enough(lambda w: project_out(blocks, m, w), w)
        next_v = jnp.where(beta > tiny, w / jnp.where(beta > tiny, beta, 1.0), 0.0)
        blocks = tuple(
            _set_row(block, m + 1 - offset, next_v)
            for offset, block in zip(offsets, blocks, strict=True)
        )
        alphas, betas, m = alphas.at[m].set(alpha), betas.at[m].set(beta), m + 1

        def converged():
            values, _, _, error = _wanted_ritz(alphas, betas, m, k, largest)
            return jnp.all(error <= tol * jnp.abs(values))

        # The first check waits for k steps: fewer cannot hold k Ritz values.
        check = (m >= k) & ((m - k) % check_every == 0)
        invariant = beta <= tiny  # the Krylov space holds exact eigenvectors
        done = invariant | jax.lax.cond(check, converged, lambda: jnp.zeros((), bool))
        return blocks, next_v, v, alphas, betas, m, done

    zeros = jnp.zeros(num_iters, start.dtype)
    counters = (jnp.zeros((), jnp.int32), jnp.zeros((), bool))
    init = (blocks, first, jnp.zeros_like(first), zeros, zeros, *counters)
    blocks, _, _, alphas, betas, m, _ = jax.lax.while_loop(unfinished, advance, init)
    values, coefficients, bound, error = _wanted_ritz(alphas, betas, m, k, largest)
    basis = jnp.concatenate(blocks)[:num_iters]
    vectors = (basis.T @ coefficients).T  # (k, n); rows past m carry 0
    info = {"residual_bound": bound, "error_bound": error, "num_iters": m, "num_hvps": m}
    if explicit_residuals:
        products = jax.vmap(matvec)(vectors)
        info["residual_norm"] = jnp.linalg.norm(products - values[:, None] * vectors, axis=1)
        info["num_hvps"] = m + k
    return values, vectors, info


def _set_row(block: jax.Array, row: jax.Array, vector: jax.Array) -> jax.Array:
    """``block`` with ``vector`` in ``row``, unchanged when ``row`` lies outside it (a negative
    row must not wrap around as NumPy indexing would)."""
    inside = (row >= 0) & (row < block.shape[0])
    return block.at[jnp.where(inside, row, block.shape[0])].set(vector, mode="drop")


def _dense_wanted_ritz(projected, m, residual, largest: bool):
    """All Ritz pairs of the leading ``m×m`` block of a (static-size) projected matrix,
    wanted ones first, with their residual and error bounds.

    The projected matrix is tridiagonal for plain Lanczos and arrow-plus-tridiagonal
    after a thick restart; ``residual`` is the norm of the vector that extends the
    basis. Rows past ``m`` are decoupled and given a diagonal beyond the Gershgorin
    interval of the active block, so they never rank among the wanted values.
    """
    size = projected.shape[0]
    active = jnp.arange(size) < m
    block = jnp.where(active[:, None] & active[None, :], projected, 0)
    spread = jnp.max(jnp.sum(jnp.abs(block), axis=1))
    sentinel = -(spread + 1) if largest else spread + 1
    theta, s = jnp.linalg.eigh(block + jnp.diag(jnp.where(active, 0, sentinel)))
    order = jnp.argsort(-theta if largest else theta)
    values, coefficients = theta[order], s[:, order]
    bound = jnp.abs(residual * coefficients[m - 1])
    return values, coefficients, bound, _error_bound(theta, order, bound)


def _thick_restart_ritz(
    matvec,
    start: jax.Array,
    max_hvps: int,
    k: int,
    largest: bool,
    *,
    max_basis: int,
    tol: float = 1e-4,
    check_every: int = 1,
    explicit_residuals: bool = False,
) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """Thick-restart Lanczos (Wu & Simon, 2000): the basis never holds more than
    ``max_basis + 1`` vectors. When it is full, the ``keep`` best Ritz vectors and
    the residual vector become the new basis and the projected matrix becomes
    ``diag(θ)`` bordered by the couplings ``β s_{m,i}``, so no converged
    information is lost. Each step reorthogonalizes (twice) against the whole
    basis and stores the full column ``Vᵀ H v``, which fills in those couplings
    without special cases.
    """
    _check_tol(tol, check_every)
    if isinstance(max_basis, bool) or not isinstance(max_basis, int) or max_basis < k + 2:
        raise ValueError(f"max_basis must be an int >= k + 2 = {k + 2}, got {max_basis!r}")
    n, dtype = start.shape[0], start.dtype
    max_basis = min(max_basis, n)
    keep = min(max(k + (max_basis - k) // 2, k + 1), max_basis - 1)
    tiny = _tiny(dtype)

    def step(j, state):
        basis, projected, _ = state
        w = matvec(basis[j])
        column = (basis @ w)[:max_basis]  # Vᵀ H v: the projected matrix's column j
        w, beta = _reorthogonalize(basis, w)
        next_v = jnp.where(beta > tiny, w / jnp.where(beta > tiny, beta, 1.0), 0.0)
        column = column.at[j + 1].set(beta, mode="drop")
        projected = projected.at[:, j].set(column).at[j, :].set(column)
        return basis.at[j + 1].set(next_v), projected, beta

    def unfinished(state):
        *_, hvps, done = state
        return (hvps < max_hvps) & ~done

    def advance(state):
        basis, projected, residual, m, hvps, _ = state

        # Restart when the basis is full: keep the best Ritz vectors and the residual vector.
        def restart(basis, projected):
            values, coefficients, _, _ = _dense_wanted_ritz(projected, max_basis, residual, largest)
            kept = coefficients[:, :keep].T @ basis[:max_basis]
            basis = jnp.zeros_like(basis).at[:keep].set(kept).at[keep].set(basis[max_basis])
            return basis, jnp.zeros_like(projected).at[:keep, :keep].set(jnp.diag(values[:keep]))

        full = m == max_basis
        basis, projected = jax.lax.cond(
            full, restart, lambda basis, projected: (basis, projected), basis, projected
        )
        m = jnp.where(full, keep, m)
        target = jnp.minimum(
            jnp.minimum(jnp.maximum(m + check_every, k), max_basis), m + max_hvps - hvps
        )
        basis, projected, residual = jax.lax.fori_loop(
            m, target, step, (basis, projected, residual)
        )
        hvps = hvps + target - m
        values, _, _, error = _dense_wanted_ritz(projected, target, residual, largest)
        done = (residual <= tiny) | jnp.all(error[:k] <= tol * jnp.abs(values[:k]))
        return basis, projected, residual, target, hvps, done

    basis = jnp.zeros((max_basis + 1, n), dtype).at[0].set(start / jnp.linalg.norm(start))
    projected = jnp.zeros((max_basis, max_basis), dtype)
    zero = jnp.zeros((), jnp.int32)
    init = (basis, projected, jnp.zeros((), dtype), zero, zero, jnp.zeros((), bool))
    basis, projected, residual, m, hvps, _ = jax.lax.while_loop(unfinished, advance, init)
    values, coefficients, bound, error = _dense_wanted_ritz(projected, m, residual, largest)
    values, coefficients, bound, error = values[:k], coefficients[:, :k], bound[:k], error[:k]
    vectors = (basis[:max_basis].T @ coefficients).T
    info = {"residual_bound": bound, "error_bound": error, "num_iters": hvps, "num_hvps": hvps}
    if explicit_residuals:
        products = jax.vmap(matvec)(vectors)
        info["residual_norm"] = jnp.linalg.norm(products - values[:, None] * vectors, axis=1)
        info["num_hvps"] = hvps + k
    return values, vectors, info


def _eigenpairs(
    matvec,
    start: jax.Array,
    k: int,
    largest: bool,
    *,
    num_iters: int | None,
    max_basis: int | None,
    tol: float,
    check_every: int,
    explicit_residuals: bool,
):
    """Adaptive Lanczos with a full basis, or thick-restart Lanczos when ``max_basis`` is set."""
    n = start.shape[0]
    options = dict(tol=tol, check_every=check_every, explicit_residuals=explicit_residuals)
    if max_basis is None:
        return _ritz(matvec, start, _default_iters(k, n, num_iters), k, largest, **options)
    cap = _default_iters(k, n, None) * 4 if num_iters is None else num_iters
    _default_iters(k, n, cap)  # validates k and the cap
    return _thick_restart_ritz(matvec, start, cap, k, largest, max_basis=max_basis, **options)


def top_eigenvalues(
    loss_fn: LossFn,
    params: chex.ArrayTree,
    data: Any,
    *,
    key: jax.Array,
    k: int = 1,
    num_iters: int | None = None,
    matvec: Callable[[chex.ArrayTree], chex.ArrayTree] | None = None,
    tol: float = 1e-4,
    check_every: int = 1,
    explicit_residuals: bool = False,
    max_basis: int | None = None,
) -> tuple[jax.Array, chex.ArrayTree, dict[str, jax.Array]]:
    """The ``k`` largest Hessian eigenvalues of the dataset loss, by adaptive Lanczos.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params: point at which the Hessian is taken.
      data: batches with a leading batch-index axis.
      key: PRNG key for the random start vector.
      k: number of eigenpairs.
      num_iters: most Lanczos steps (HVPs); default ``max(2k + 20, 50)``,
        capped at the number of parameters (four times that with ``max_basis``).
      matvec: override the operator (e.g. :func:`gauss_newton_vp`).
      tol: stop once every wanted pair's ``error_bound`` (see the module
        docstring) is below ``tol`` times its Ritz value; ``0`` runs all
        ``num_iters`` steps.
      check_every: steps between convergence checks (static; a check is an
        ``eigh`` of the small tridiagonal matrix, cheap next to an HVP).
      explicit_residuals: also compute ``‖Hy − θy‖`` per pair (``k`` more HVPs).
      max_basis: memory bound. ``None`` keeps every Lanczos vector (``num_iters``
        vectors of the parameter size); an int ``>= k + 2`` runs thick-restart
        Lanczos (Wu & Simon, 2000) holding at most ``max_basis + 1`` vectors,
        e.g. ``2 * k + 4`` for O(n) memory per wanted eigenvector. It usually
        needs more HVPs than the full basis for the same tolerance.

    Returns:
      ``(eigenvalues[k] descending, eigenvectors with leading axis k in the
      structure of params, diagnostics)``; diagnostics hold per pair the
      Lanczos ``residual_bound`` ``‖Hy − θy‖`` (a guaranteed eigenvalue error
      bound) and the ``error_bound`` the stop uses, ``num_iters`` (Lanczos
      steps taken), ``num_hvps`` and, when asked, ``residual_norm``.

    Example:
      >>> from jaxreg.data import batches
      >>> loss_fn = lambda w, b: 0.5 * jnp.sum(jnp.array([4.0, 2.0, 1.0]) * w ** 2)
      >>> data = batches(jnp.zeros((4, 1)), jnp.zeros(4), 2)
      >>> values, vectors, info = top_eigenvalues(loss_fn, jnp.zeros(3), data,
      ...                                         key=jax.random.key(0), k=2)
      >>> [round(v, 4) for v in values.tolist()]
      [4.0, 2.0]
    """
    check_key(key)
    product = matvec if matvec is not None else hvp(loss_fn, params, data)
    flat_matvec, flat, unravel = flattened_operator(product, params)
    start = jax.random.normal(key, flat.shape, flat.dtype)
    values, vectors, info = _eigenpairs(
        flat_matvec,
        start,
        k,
        largest=True,
        num_iters=num_iters,
        max_basis=max_basis,
        tol=tol,
        check_every=check_every,
        explicit_residuals=explicit_residuals,
    )
    return values, jax.vmap(unravel)(vectors), info


def min_eigenvalue(
    loss_fn: LossFn,
    params: chex.ArrayTree,
    data: Any,
    *,
    key: jax.Array,
    num_iters: int | None = None,
    tol: float = 1e-4,
    check_every: int = 1,
    explicit_residuals: bool = False,
    max_basis: int | None = None,
) -> tuple[jax.Array, chex.ArrayTree, dict[str, jax.Array]]:
    """The smallest Hessian eigenvalue (negative curvature) and its eigenvector, by Lanczos.

    Stops adaptively like :func:`top_eigenvalues` (same ``tol``, ``check_every``,
    ``explicit_residuals``, and ``max_basis`` for thick restarts).

    Example:
      >>> from jaxreg.data import batches
      >>> data = batches(jnp.zeros((2, 1)), jnp.zeros(2), 2)
      >>> loss_fn = lambda w, batch: 0.5 * jnp.sum(jnp.array([2.0, -1.0, 0.5]) * w**2)  # a saddle
      >>> value, vector, info = min_eigenvalue(loss_fn, jnp.zeros(3), data, key=jax.random.key(0))
      >>> round(float(value), 4), [round(abs(v), 4) for v in vector.tolist()]
      (-1.0, [0.0, 1.0, 0.0])
    """
    check_key(key)
    flat_matvec, flat, unravel = flattened_operator(hvp(loss_fn, params, data), params)
    start = jax.random.normal(key, flat.shape, flat.dtype)
    values, vectors, info = _eigenpairs(
        flat_matvec,
        start,
        1,
        largest=False,
        num_iters=num_iters,
        max_basis=max_basis,
        tol=tol,
        check_every=check_every,
        explicit_residuals=explicit_residuals,
    )
    return values[0], unravel(vectors[0]), info


def block_top_eigenvalues(
    loss_fn: LossFn,
    params: chex.ArrayTree,
    data: Any,
    *,
    key: jax.Array,
    blocks: Mapping[str, MaskLike] | None = None,
    k: int = 1,
    num_iters: int | None = None,
    tol: float = 1e-4,
) -> dict[str, jax.Array]:
    """Top eigenvalues of each diagonal Hessian block ``H_bb`` (e.g. per layer).

    Each block stops adaptively like :func:`top_eigenvalues` (``tol``).

    Args:
      blocks: name → mask selecting the block's leaves; default one block per
        top-level entry of ``params`` that has sub-entries (e.g. per layer of
        ``{"layers": {0: ..., 1: ...}}``), else one per leaf.

    Returns:
      name → eigenvalues ``(k,)``, descending.

    Example:
      >>> from jaxreg.data import batches
      >>> data = batches(jnp.zeros((2, 1)), jnp.zeros(2), 2)
      >>> def loss_fn(params, batch):
      ...     return 0.5 * (jnp.sum(jnp.array([4.0, 1.0]) * params["a"] ** 2)
      ...                   + jnp.sum(jnp.array([3.0, 2.0]) * params["b"] ** 2))
      >>> params = {"a": jnp.zeros(2), "b": jnp.zeros(2)}
      >>> out = block_top_eigenvalues(loss_fn, params, data, key=jax.random.key(0))
      >>> {name: round(float(v[0]), 4) for name, v in out.items()}
      {'a': 4.0, 'b': 3.0}
    """
    check_key(key)
    if blocks is None:
        blocks = _default_blocks(params)
    product = hvp(loss_fn, params, data)
    out = {}
    for index, (name, mask) in enumerate(blocks.items()):
        selected = resolve(mask, params)
        keep = ravel_pytree(
            jax.tree.map(lambda leaf, s: jnp.full(leaf.shape, s, leaf.dtype), params, selected)
        )[0]
        # Counted from the (static) mask, so the function stays jit-able.
        size = sum(
            leaf.size
            for leaf, s in zip(jax.tree.leaves(params), jax.tree.leaves(selected), strict=True)
            if bool(s)
        )
        if size == 0:
            raise ValueError(f"block {name!r} selects no parameters")
        flat_matvec, flat, _ = flattened_operator(product, params)
        start = jax.random.normal(jax.random.fold_in(key, index), flat.shape, flat.dtype) * keep
        values, _, _ = _ritz(
            lambda v, f=flat_matvec, m=keep: m * f(m * v),
            start,
            _default_iters(k, size, num_iters),
            k,
            largest=True,
            tol=tol,
        )
        out[name] = values
    return out


def _default_blocks(params: chex.ArrayTree) -> dict[str, MaskLike]:
    from jaxreg.masks import leaf_path

    paths = [leaf_path(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    groups = sorted({p.rsplit("/", 1)[0] if "/" in p else p for p in paths})

    def mask_for(group):
        def fn(tree):
            return jax.tree_util.tree_map_with_path(
                lambda path, _: (
                    (
                        leaf_path(path).rsplit("/", 1)[0]
                        if "/" in leaf_path(path)
                        else leaf_path(path)
                    )
                    == group
                ),
                tree,
            )

        return fn

    return {group: mask_for(group) for group in groups}


class PowerIterationResult(NamedTuple):
    """Output of :func:`power_iteration`: eigenvalues, eigenvectors and HVPs spent.

    Example:
      >>> from jaxreg.data import batches
      >>> data = batches(jnp.zeros((2, 1)), jnp.zeros(2), 2)
      >>> loss_fn = lambda w, batch: 0.5 * jnp.sum(jnp.array([4.0, 1.0]) * w**2)
      >>> out = power_iteration(loss_fn, jnp.zeros(2), data, key=jax.random.key(0))
      >>> round(float(out.eigenvalues[0]), 2), int(out.num_hvps) > 1
      (4.0, True)
    """

    eigenvalues: jax.Array
    eigenvectors: chex.ArrayTree
    num_hvps: jax.Array


def power_iteration(
    loss_fn: LossFn,
    params: chex.ArrayTree,
    data: Any,
    *,
    key: jax.Array,
    k: int = 1,
    num_iters: int = 100,
    tol: float = 1e-3,
) -> PowerIterationResult:
    """PyHessian's method, for comparison: power iteration with deflation, its defaults.

    For each of the ``k`` eigenpairs: iterate ``v ← Hv/‖Hv‖`` (orthogonalized
    against the pairs already found) until the Rayleigh quotient changes by
    less than ``tol`` relative (``|λ - λ_prev| / (|λ_prev| + 1e-6)``), at most
    ``num_iters`` times — PyHessian's ``eigenvalues(maxIter=100, tol=1e-3)``.
    Finds the eigenvalues of largest *magnitude*.

    Example:
      >>> from jaxreg.data import batches
      >>> data = batches(jnp.zeros((2, 1)), jnp.zeros(2), 2)
      >>> loss_fn = lambda w, batch: 0.5 * jnp.sum(jnp.array([4.0, 2.0, 1.0]) * w**2)
      >>> out = power_iteration(loss_fn, jnp.zeros(3), data, key=jax.random.key(0), k=2, tol=1e-6)
      >>> [round(v, 2) for v in out.eigenvalues.tolist()]
      [4.0, 2.0]
    """
    check_key(key)
    flat_matvec, flat, unravel = flattened_operator(hvp(loss_fn, params, data), params)
    n = flat.size
    found = jnp.zeros((k, n), flat.dtype)
    values = jnp.zeros(k, flat.dtype)
    total = jnp.zeros((), jnp.int32)

    def orthogonalize(v, found):
        return v - found.T @ (found @ v)

    for index in range(k):
        v = orthogonalize(
            jax.random.normal(jax.random.fold_in(key, index), (n,), flat.dtype), found
        )
        v = v / jnp.linalg.norm(v)

        def cond(state):
            _, eig, prev, it = state
            converged = jnp.abs(eig - prev) / (jnp.abs(prev) + 1e-6) < tol
            return (it < num_iters) & ~((it > 1) & converged)

        def body(state, found=found):
            v, eig, _, it = state
            hv = orthogonalize(flat_matvec(v), found)
            new_eig = jnp.vdot(hv, v)
            return hv / jnp.linalg.norm(hv), new_eig, eig, it + 1

        v, eig, _, iters = jax.lax.while_loop(
            cond, body, (v, jnp.zeros((), flat.dtype), jnp.zeros((), flat.dtype) + jnp.inf, 0)
        )
        found = found.at[index].set(v)
        values = values.at[index].set(eig)
        total = total + iters
    return PowerIterationResult(values, jax.vmap(unravel)(found), total)
