"""Optax transforms that optax lacks: decoupled decay, proximal steps, masked gradient noise.

All go in ``optax.chain``; strengths and rates may be traced. Masks follow
optax semantics (``True`` = transform this leaf); masked-out leaves' updates
pass through unchanged, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from jaxreg import prox
from jaxreg._checks import check_interval, check_non_negative, require_params
from jaxreg.masks import MaskLike, resolve

__all__ = [
    "PreconditionedProximalState",
    "ScheduleCountState",
    "SpectralNormState",
    "decoupled_weight_decay",
    "masked_gradient_noise",
    "max_norm",
    "proximal_elastic_net",
    "proximal_group_lasso",
    "proximal_l1",
    "sam",
    "spectral_norm_penalty",
]

ScalarOrSchedule = ArrayLike | optax.Schedule


class ScheduleCountState(NamedTuple):
    """Step counter of the proximal transforms (it drives their learning-rate schedules).

    Example:
      >>> tx = proximal_l1(0.1, 1e-2)
      >>> state = tx.init({"w": jnp.ones(2)})
      >>> _, state = tx.update({"w": jnp.zeros(2)}, state, {"w": jnp.ones(2)})
      >>> isinstance(state, ScheduleCountState), int(state.count)
      (True, 1)
    """

    count: jax.Array


def _with_mask(
    inner: optax.GradientTransformation, mask: MaskLike | None
) -> optax.GradientTransformation:
    if mask is None:
        return inner

    def mask_fn(params):
        return resolve(mask, params)

    return optax.masked(inner, mask_fn)


def _value_at(value: ScalarOrSchedule, count: jax.Array) -> jax.Array:
    return value(count) if callable(value) else value


def decoupled_weight_decay(
    rate: ArrayLike,
    schedule: optax.Schedule | None = None,
    mask: MaskLike | None = None,
) -> optax.GradientTransformation:
    """Decoupled weight decay (Loshchilov & Hutter, 2019): adds ``-rate · s(t) · p`` to the update.

    Place it *after* the optimizer in a chain, e.g.
    ``optax.chain(optax.adam(lr), decoupled_weight_decay(1e-4))``: the step is
    ``p ← p - lr·adam(g) - rate·s(t)·p``. The decay is scaled by the schedule
    multiplier ``s(t)`` (1 without a schedule) but **not** by the learning rate.
    ``optax.adamw(lr, weight_decay=λ)`` instead steps ``p ← p - lr·(adam(g) + λp)``:
    its decay is ``lr·λ``, so changing the learning rate silently changes the
    regularization. The two agree when ``rate = lr·λ`` and ``s(t) = lr_t/lr``.
    Under plain SGD the same step is an L2 penalty ``(rate/lr)·½Σw²``; under
    Adam it is not (the penalty's gradient would be rescaled by Adam).

    Built on ``optax.add_decayed_weights``, which *adds* ``weight_decay · p`` to
    the update (optax expects it before the learning-rate scaling, which then
    negates it); placed after the optimizer, the decay must be subtracted, so
    this passes ``weight_decay = -rate · s(t)``.

    Args:
      rate: decay per step (may be traced), ``>= 0``.
      schedule: optional multiplier ``s(count)``, e.g. an optax schedule divided
        by its peak value.
      mask: optax-style mask, e.g. :func:`jaxreg.masks.weights_only`.

    Example:
      >>> tx = optax.chain(optax.sgd(0.1), decoupled_weight_decay(0.01))
      >>> params = {"w": jnp.array([1.0])}
      >>> updates, _ = tx.update({"w": jnp.array([0.0])}, tx.init(params), params)
      >>> round(float(updates["w"][0]), 6)
      -0.01
    """
    check_non_negative(rate, "rate")
    # optax adds ``weight_decay · p`` to the update; a negative weight decay subtracts it.
    if schedule is None:
        decay = -rate
    else:

        def decay(count):
            return -rate * schedule(count)

    return _with_mask(optax.add_decayed_weights(decay), mask)


class PreconditionedProximalState(NamedTuple):
    """State of a proximal step that wraps its optimizer: the optimizer's state and a count.

    Example:
      >>> tx = proximal_l1(0.5, 0.1, optimizer=optax.adam(0.1))
      >>> state = tx.init({"w": jnp.ones(2)})
      >>> isinstance(state, PreconditionedProximalState), int(state.count)  # Adam's state is inner
      (True, 0)
    """

    inner: optax.OptState
    count: jax.Array


class _AdamMoments(NamedTuple):
    nu: chex.ArrayTree
    count: jax.Array


def _adam_state(opt_state: optax.OptState) -> _AdamMoments | None:
    """Adam's second moment ``nu`` and its ``count`` in ``opt_state`` (found by optax's
    ``tree_get_all_with_path``), or ``None`` when there is none (SGD, momentum)."""
    found = optax.tree_utils.tree_get_all_with_path(opt_state, "nu")
    if not found:
        return None
    if len(found) > 1:
        raise ValueError(f"optimizer holds {len(found)} Adam-family states; expected at most one")
    (path, nu) = found[0]
    owner = path[:-1]
    counts = [
        v for p, v in optax.tree_utils.tree_get_all_with_path(opt_state, "count") if p[:-1] == owner
    ]
    if len(counts) != 1:
        raise ValueError("the optimizer's Adam-family state has no step count beside nu")
    return _AdamMoments(nu, counts[0])


def _preconditioned_proximal(
    leaf_prox: Callable[[jax.Array, jax.Array], jax.Array],
    optimizer: optax.GradientTransformation,
    strength: ArrayLike,
    learning_rate: ScalarOrSchedule,
    mask: MaskLike | None,
    b2: float,
    eps: float,
) -> optax.GradientTransformation:
    """``optimizer``, then the proximal step in its diagonal metric ``D = sqrt(ν̂) + eps``."""
    check_non_negative(strength, "strength")
    if not callable(learning_rate):
        check_non_negative(learning_rate, "learning_rate")
    # fit passes extra arguments (grad_fn) to every update; a custom plain transform takes none.
    optimizer = optax.with_extra_args_support(optimizer)

    def init_fn(params):
        return PreconditionedProximalState(optimizer.init(params), jnp.zeros((), jnp.int32))

    def update_fn(updates, state, params=None, **extra_args):
        params = require_params(params, "proximal step")
        inner_updates, inner = optimizer.update(updates, state.inner, params, **extra_args)
        threshold = _value_at(learning_rate, state.count) * strength
        adam = _adam_state(inner)
        if adam is None:
            scale = jax.tree.map(jnp.ones_like, params)
        else:
            correction = 1 - jnp.asarray(b2, jnp.float32) ** adam.count.astype(jnp.float32)
            scale = jax.tree.map(lambda v: 1 / (jnp.sqrt(v / correction) + eps), adam.nu)
        selected = resolve(mask, params)

        def step(p, u, s, keep):
            moved = optax.apply_updates(p, u)
            if not keep:
                return u
            target = leaf_prox(moved, (threshold * s).astype(p.dtype))
            return (target - p).astype(p.dtype)

        new_updates = jax.tree.map(step, params, inner_updates, scale, selected)
        return new_updates, PreconditionedProximalState(inner, optax.safe_increment(state.count))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _proximal(
    prox_fn: Callable[[chex.ArrayTree, jax.Array], chex.ArrayTree],
    strength: ArrayLike,
    learning_rate: ScalarOrSchedule,
    mask: MaskLike | None,
    name: str,
) -> optax.GradientTransformation:
    check_non_negative(strength, "strength")
    if not callable(learning_rate):
        check_non_negative(learning_rate, "learning_rate")

    def init_fn(params):
        del params
        return ScheduleCountState(count=jnp.zeros((), jnp.int32))

    def update_fn(updates, state, params=None):
        params = require_params(params, name)
        threshold = _value_at(learning_rate, state.count) * strength
        target = prox_fn(optax.apply_updates(params, updates), threshold)
        # p + (prox - p) is exactly 0 wherever prox is 0 (x + (-x) == 0 in IEEE).
        new_updates = jax.tree.map(lambda t, p: (t - p).astype(p.dtype), target, params)
        return new_updates, ScheduleCountState(count=optax.safe_increment(state.count))

    return _with_mask(optax.GradientTransformation(init_fn, update_fn), mask)


def proximal_l1(
    strength: ArrayLike,
    learning_rate: ScalarOrSchedule,
    mask: MaskLike | None = None,
    *,
    optimizer: optax.GradientTransformation | None = None,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    """Proximal L1 step: the parameters land on ``prox.l1(p + u, lr_t · strength)``.

    Goes **last** in a chain, after the optimizer whose learning rate it
    mirrors: with ``optax.chain(optax.sgd(lr), proximal_l1(α, lr))`` this is
    ISTA on ``loss + α·Σ|w|``. Unlike a subgradient penalty it produces exact
    zeros, and a zero stays zero unless the gradient step pushes it past the
    threshold ``lr_t·α``. ``learning_rate`` is a float or the same optax
    schedule given to the optimizer.

    **Under Adam** the plain step is the prox in the wrong metric: its fixed
    points solve ``0 ∈ g + α·D·∂|w|`` with Adam's ``D = sqrt(ν̂) + ε``, a
    reweighted lasso whose strength depends on gradient scale. Pass the
    optimizer instead (``proximal_l1(α, lr, optimizer=optax.adam(lr))``, not in
    a chain): the returned transform runs it and takes the prox in its metric,
    threshold ``lr_t·α / D_i`` per coordinate (Yun et al. 2021, ProxGen), whose
    fixed points solve the lasso ``0 ∈ g + α·∂|w|`` for any ``D``, so ``α``
    means what it means under SGD. ``b2`` and ``eps`` must be the optimizer's
    (the defaults are optax.adam's). An optimizer without an Adam state (SGD,
    momentum) has ``D = 1``: the result equals ``optax.chain(optimizer,
    proximal_l1(α, lr))``. ``mask`` restricts the prox, not the optimizer.

    Example:
      >>> tx = optax.chain(optax.sgd(0.1), proximal_l1(strength=1.0, learning_rate=0.1))
      >>> params = {"w": jnp.array([0.05, 1.0])}
      >>> updates, _ = tx.update({"w": jnp.zeros(2)}, tx.init(params), params)
      >>> [round(v, 6) for v in optax.apply_updates(params, updates)["w"].tolist()]
      [0.0, 0.9]
      >>> adam_l1 = proximal_l1(0.5, 0.1, optimizer=optax.adam(0.1))
      >>> updates, _ = adam_l1.update({"w": jnp.array([1.0, -2.0])}, adam_l1.init(params), params)
      >>> [round(v, 4) for v in optax.apply_updates(params, updates)["w"].tolist()]
      [0.0, 1.075]
    """
    if optimizer is not None:
        return _preconditioned_proximal(
            prox.soft_threshold, optimizer, strength, learning_rate, mask, b2, eps
        )
    return _proximal(lambda p, t: prox.l1(p, t), strength, learning_rate, mask, "proximal_l1")


def proximal_elastic_net(
    strength: ArrayLike,
    l1_ratio: ArrayLike,
    learning_rate: ScalarOrSchedule,
    mask: MaskLike | None = None,
    *,
    optimizer: optax.GradientTransformation | None = None,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    """Proximal elastic-net step onto ``prox.elastic_net(p + u, lr_t · strength, l1_ratio)``.

    With SGD this minimizes ``loss + strength·elastic_net(w, l1_ratio)``
    (scikit-learn's ``ElasticNet(alpha=strength, l1_ratio=...)`` for least squares).
    ``optimizer=`` (e.g. ``optax.adam(lr)``) runs that optimizer and takes the
    prox in its diagonal metric, as in :func:`proximal_l1`.

    Example:
      >>> tx = proximal_elastic_net(1.0, 0.5, 0.1, optimizer=optax.sgd(0.1))
      >>> params = {"w": jnp.array([0.05, 1.0])}
      >>> updates, _ = tx.update({"w": jnp.zeros(2)}, tx.init(params), params)
      >>> [round(v, 4) for v in optax.apply_updates(params, updates)["w"].tolist()]
      [0.0, 0.9048]
    """
    check_interval(l1_ratio, "l1_ratio", 0.0, 1.0, closed_high=True)
    if optimizer is not None:
        return _preconditioned_proximal(
            lambda w, t: prox.elastic_net_leaf(w, t, l1_ratio),
            optimizer,
            strength,
            learning_rate,
            mask,
            b2,
            eps,
        )
    return _proximal(
        lambda p, t: prox.elastic_net(p, t, l1_ratio),
        strength,
        learning_rate,
        mask,
        "proximal_elastic_net",
    )


def proximal_group_lasso(
    strength: ArrayLike,
    learning_rate: ScalarOrSchedule,
    group_axis: int = -1,
    mask: MaskLike | None = None,
) -> optax.GradientTransformation:
    """Proximal group-lasso step: whole groups (e.g. a unit's incoming weights) become exactly 0.

    Groups are slices along ``group_axis`` (see :func:`jaxreg.penalties.group_norms`).
    Usually combined with ``mask=jaxreg.masks.weights_only``.

    Example:
      >>> kernel = jnp.array([[0.3, 3.0], [0.4, 4.0]])  # unit norms 0.5 and 5
      >>> tx = optax.chain(optax.sgd(1.0), proximal_group_lasso(strength=1.0, learning_rate=1.0))
      >>> updates, _ = tx.update(jnp.zeros((2, 2)), tx.init(kernel), kernel)
      >>> new = optax.apply_updates(kernel, updates)  # unit 0 → 0, unit 1's norm 5 → 4
      >>> [[round(v, 4) for v in row] for row in new.tolist()]
      [[0.0, 2.4], [0.0, 3.2]]
    """
    return _proximal(
        lambda p, t: prox.group_lasso(p, t, group_axis),
        strength,
        learning_rate,
        mask,
        "proximal_group_lasso",
    )


def masked_gradient_noise(
    eta: ArrayLike, gamma: ArrayLike, *, key: jax.Array | int, mask: MaskLike | None = None
) -> optax.GradientTransformation:
    """``optax.add_noise`` (annealed Gaussian gradient noise, Neelakantan et al. 2015) with a mask.

    The noise variance at step ``t`` is ``eta / (1 + t)**gamma``. This only adds a
    mask to optax's transform; the recipe is to put it right after the
    gradient, before the optimizer::

        optax.chain(
            masked_gradient_noise(0.01, 0.55, key=key, mask=masks.weights_only),
            optax.adam(lr),
        )

    Example:
      >>> from jaxreg import masks
      >>> params = {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros(2)}
      >>> tx = masked_gradient_noise(0.1, 0.55, key=0, mask=masks.weights_only)
      >>> noisy, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
      >>> bool(jnp.any(noisy["kernel"] != 0)), noisy["bias"].tolist()  # biases untouched
      (True, [0.0, 0.0])
    """
    check_non_negative(eta, "eta")
    return _with_mask(optax.add_noise(eta, gamma, key), mask)


def max_norm(radius: ArrayLike, *, mask: MaskLike | None = None) -> optax.GradientTransformation:
    """Project each unit's incoming weights onto the ball of radius ``radius`` after the step.

    The max-norm constraint of Srebro et al. (2005), used with dropout by
    Srivastava et al. (2014): with ``p' = params + updates``, every unit's weight
    vector (a slice along the last axis: a column of a dense kernel ``(in, out)``,
    one output channel of a conv kernel ``(..., in, out)``) is scaled by
    ``min(1, c/‖w‖₂)``; the returned update is ``project(p') − params``. Put it
    *last* in ``optax.chain`` (after the learning rate), since it acts on the new
    parameters, not on a gradient. 1-D leaves would be clipped entry by entry;
    select the kernels with ``mask=masks.weights_only``.

    Args:
      radius: the largest norm ``c`` a unit's weight vector may have (may be traced).
      mask: leaves to constrain (optax semantics).

    Example:
      >>> import optax, jax.numpy as jnp
      >>> opt = optax.chain(optax.sgd(1.0), max_norm(1.0))
      >>> params = {"w": jnp.array([[3.0, 0.1], [4.0, 0.1]])}
      >>> updates, _ = opt.update({"w": jnp.zeros((2, 2))}, opt.init(params), params)
      >>> new = optax.apply_updates(params, updates)["w"]  # column 0 had norm 5
      >>> [[round(float(v), 4) for v in row] for row in new]
      [[0.6, 0.1], [0.8, 0.1]]
    """
    check_non_negative(radius, "radius")

    def init_fn(params: chex.ArrayTree) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def constrain(update: jax.Array, param: jax.Array) -> jax.Array:
        new = param + update
        axes = tuple(range(new.ndim - 1))
        norms = jnp.sqrt(jnp.sum(jnp.square(new), axis=axes, keepdims=True))
        scale = radius / jnp.maximum(norms, jnp.finfo(new.dtype).tiny)
        # Units inside the ball keep their update bit for bit.
        return jnp.where(norms > radius, new * scale.astype(new.dtype) - param, update)

    def update_fn(updates, state, params=None):
        params = require_params(params, "max_norm")
        updates = jax.tree.map(constrain, updates, params)
        return updates, state

    return _with_mask(optax.GradientTransformation(init_fn, update_fn), mask)


def _sam_ascent(rho: ArrayLike, adaptive: bool, eta: float) -> optax.GradientTransformation:
    """Minus SAM's ascent step ``ε = ρ·T²g/‖Tg‖`` (``T = I``, or ``|w| + η`` for ASAM);
    optax's ``sam`` negates it back."""

    def update_fn(updates, state, params=None):
        if adaptive:
            params = require_params(params, "sam(adaptive=True)")
            scale = jax.tree.map(lambda p: jnp.abs(p) + eta, params)
        else:
            scale = jax.tree.map(jnp.ones_like, updates)
        scaled = jax.tree.map(lambda t, g: t * g, scale, updates)
        norm = optax.tree.norm(scaled)
        factor = rho / jnp.maximum(norm, jnp.finfo(norm.dtype).tiny)
        return jax.tree.map(lambda t, tg: -factor * t * tg, scale, scaled), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def sam(
    optimizer: optax.GradientTransformation,
    rho: ArrayLike,
    *,
    adaptive: bool = False,
    eta: float = 0.01,
) -> optax.GradientTransformationExtraArgs:
    """Sharpness-aware minimization with one descent step per minibatch.

    Each update moves to the ascent point ``w + ε``, ``ε = ρ·g/‖g‖`` (Foret et al.,
    2021), or for ASAM ``ε = ρ·T²g/‖Tg‖`` with ``T = |w| + η`` (Kwon et al., 2021),
    takes the gradient there, and hands it to ``optimizer`` at ``w``. The gradient at
    the ascent point comes from the ``grad_fn(params, i)`` keyword that
    :func:`jaxreg.fit`'s loop passes to every update (optax's opaque SAM mode), so
    the number of descent steps equals the number of minibatches, unlike
    ``optax.contrib.sam``'s default mode, which alternates ascent and descent steps.

    Args:
      optimizer: the descent optimizer (e.g. ``optax.adam(1e-3)``).
      rho: the neighbourhood radius ``ρ`` (may be traced).
      adaptive: ASAM's scale-invariant neighbourhood.
      eta: ASAM's offset ``η`` (keeps zero weights perturbable).

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> loss = lambda w: jnp.sum(w**4)
      >>> opt = sam(optax.sgd(0.1), rho=0.5)
      >>> w = jnp.array([1.0, 0.0])
      >>> grad_fn = lambda p, _: jax.grad(loss)(p)
      >>> updates, _ = opt.update(jax.grad(loss)(w), opt.init(w), w, grad_fn=grad_fn)
      >>> round(float(updates[0]), 3)  # -0.1·4·(1 + 0.5)³ at the ascent point
      -1.35
    """
    check_non_negative(rho, "rho")
    return optax.contrib.sam(
        optimizer,
        _sam_ascent(rho, adaptive, eta),
        sync_period=2,
        opaque_mode=True,
    )


class SpectralNormState(NamedTuple):
    """State of :func:`spectral_norm_penalty`: per selected leaf, the left singular vector
    estimate ``u`` (``(units,)``; ``None`` for leaves it does not touch).

    Example:
      >>> params = {"kernel": jnp.diag(jnp.array([3.0, 1.0])), "bias": jnp.zeros(2)}
      >>> tx = spectral_norm_penalty(0.1, key=jax.random.key(0))
      >>> state = tx.init(params)
      >>> state.u["kernel"].shape, state.u["bias"] is None  # kernels only (ndim >= 2)
      ((2,), True)
    """

    u: chex.ArrayTree


def _as_matrix(leaf: jax.Array) -> jax.Array:
    return leaf.reshape(-1, leaf.shape[-1]).T  # (units, fan_in): σ is the same either way


def spectral_norm_penalty(
    strength: ArrayLike,
    *,
    key: jax.Array,
    num_iterations: int = 1,
    mask: MaskLike | None = None,
) -> optax.GradientTransformation:
    """Add the gradient of ``strength · ½σ(W)²`` for every selected kernel (Yoshida &
    Miyato, 2017), with σ from power iteration carried across steps.

    A kernel ``(..., in, out)`` is read as the ``(out, prod(...)·in)`` matrix ``W``
    (conv kernels reshaped as in spectral normalization). Each step runs
    ``num_iterations`` power iterations from the stored ``u`` (``v = Wᵀu/‖Wᵀu‖``,
    ``u = Wv/‖Wv‖``), so ``σ = uᵀWv`` tracks the top singular value as training
    moves ``W``, and adds ``strength·σ·u vᵀ`` (the gradient of ``½σ²``) to the
    gradient. Put it before the optimizer, like a penalty's gradient. Leaves with
    fewer than 2 dimensions are left alone.

    Args:
      strength: ``λ`` (may be traced).
      key: PRNG key of the initial ``u``.
      num_iterations: power iterations per step (static).
      mask: leaves to penalize (optax semantics; e.g. ``masks.weights_only``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> w = {"w": jnp.diag(jnp.array([3.0, 1.0]))}
      >>> opt = spectral_norm_penalty(0.5, key=jax.random.key(0), num_iterations=20)
      >>> grads, _ = opt.update({"w": jnp.zeros((2, 2))}, opt.init(w), w)
      >>> g = grads["w"]  # 0.5·3·e₁e₁ᵀ
      >>> round(float(g[0, 0]), 3), round(float(jnp.abs(g).sum() - jnp.abs(g[0, 0])), 3)
      (1.5, 0.0)
    """
    check_non_negative(strength, "strength")
    if num_iterations < 1:
        raise ValueError(f"num_iterations must be at least 1, got {num_iterations}")

    def init_fn(params):
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(key, max(len(leaves), 1))
        u = [
            jax.random.normal(k, (leaf.shape[-1],), leaf.dtype) if leaf.ndim >= 2 else None
            for k, leaf in zip(keys, leaves, strict=False)
        ]
        return SpectralNormState(u=jax.tree.unflatten(treedef, u))

    def update_fn(updates, state, params=None):
        params = require_params(params, "spectral_norm_penalty")
        leaves, treedef = jax.tree.flatten(params)
        grads = treedef.flatten_up_to(updates)
        us = treedef.flatten_up_to(state.u)
        new_grads, new_us = [], []
        for leaf, grad, u in zip(leaves, grads, us, strict=True):
            if u is None:
                new_grads.append(grad)
                new_us.append(None)
                continue
            w = jax.lax.stop_gradient(_as_matrix(leaf))
            for _ in range(num_iterations):
                v = w.T @ u
                v = v / jnp.maximum(jnp.linalg.norm(v), jnp.finfo(v.dtype).tiny)
                u = w @ v
                u = u / jnp.maximum(jnp.linalg.norm(u), jnp.finfo(u.dtype).tiny)
            sigma = u @ w @ v
            step = (strength * sigma * jnp.outer(u, v)).T.reshape(leaf.shape)
            new_grads.append((grad + step).astype(grad.dtype))
            new_us.append(u)
        return (
            jax.tree.unflatten(treedef, new_grads),
            SpectralNormState(u=jax.tree.unflatten(treedef, new_us)),
        )

    return _with_mask(optax.GradientTransformation(init_fn, update_fn), mask)
