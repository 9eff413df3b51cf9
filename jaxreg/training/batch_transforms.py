"""Minibatch transforms whose strengths are read from ``hparams``, for :func:`jaxreg.fit`.

Each function here returns ``transform(key, batch, *, hparams) -> batch`` on a
minibatch ``{"x", "y", "weight"}``. The strength comes from
``hparams[name]`` when present (traced in a sweep: one compile for every
value), else from ``default``. Nothing is rebuilt per value, so
``sweeps.run`` can sweep noise σ, smoothing ε, mixup α and an augmentation
magnitude together with the learning rate and dropout rate.

Example:
  >>> transform = chain(input_noise(), label_smoothing(num_classes=3))
  >>> batch = {"x": jnp.zeros((4, 2)), "y": jnp.array([0, 1, 2, 0]), "weight": jnp.ones(4)}
  >>> out = transform(jax.random.key(0), batch, hparams={"noise_std": 0.1, "label_smoothing": 0.2})
  >>> out["x"].shape, out["y"].shape
  ((4, 2), (4, 3))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
from jax.typing import ArrayLike

from jaxreg import labels as labels_lib
from jaxreg import noise
from jaxreg.augment import mix
from jaxreg.calling import keywords_of, takes

__all__ = ["augmentation", "chain", "input_noise", "label_smoothing", "mixup"]

Batch = dict[str, jax.Array]
Hparams = Mapping[str, Any]
Transform = Callable[..., Batch]


def _value(hparams: Hparams | None, name: str, default: ArrayLike | None) -> ArrayLike:
    if hparams is not None and name in hparams:
        return hparams[name]
    if default is None:
        raise KeyError(f"hparams has no {name!r} and the transform has no default")
    return default


def input_noise(name: str = "noise_std", default: ArrayLike | None = 0.0) -> Transform:
    """Additive Gaussian input noise ``x + σ·N(0, 1)``, ``σ = hparams[name]``.

    See :func:`jaxreg.noise.gaussian_input_noise`.

    Example:
      >>> batch = {"x": jnp.ones((4, 40)), "y": jnp.array([0, 1, 2, 3]), "weight": jnp.ones(4)}
      >>> noisy = input_noise()(jax.random.key(0), batch, hparams={"noise_std": 0.5})
      >>> bool(jnp.any(noisy["x"] != 1.0)), bool(jnp.all(noisy["y"] == batch["y"]))
      (True, True)
      >>> bool(jnp.all(input_noise()(jax.random.key(0), batch)["x"] == 1.0))  # default σ = 0
      True
    """

    @takes("hparams")
    def transform(key: jax.Array, batch: Batch, *, hparams: Hparams | None = None) -> Batch:
        sigma = _value(hparams, name, default)
        return {**batch, "x": noise.gaussian_input_noise(key, batch["x"], sigma)}

    return transform


def label_smoothing(
    num_classes: int,
    name: str = "label_smoothing",
    default: ArrayLike | None = 0.0,
    convention: str = "off_target",
) -> Transform:
    """Smooth integer labels with ``ε = hparams[name]`` (see :func:`jaxreg.labels.smooth`).

    Example:
      >>> batch = {"x": jnp.ones((4, 40)), "y": jnp.array([0, 1, 2, 3]), "weight": jnp.ones(4)}
      >>> smooth = label_smoothing(num_classes=4)
      >>> out = smooth(jax.random.key(0), batch, hparams={"label_smoothing": 0.2})
      >>> [round(v, 4) for v in out["y"][0].tolist()]  # off-target: ε/(K−1) on the others
      [0.8, 0.0667, 0.0667, 0.0667]
    """

    @takes("hparams")
    def transform(key: jax.Array, batch: Batch, *, hparams: Hparams | None = None) -> Batch:
        del key
        eps = _value(hparams, name, default)
        return {**batch, "y": labels_lib.smooth(batch["y"], num_classes, eps, convention)}

    return transform


def mixup(
    num_classes: int, name: str = "mixup_alpha", default: ArrayLike | None = None
) -> Transform:
    """Mixup, ``α = hparams[name]`` (see :func:`jaxreg.augment.mix.mixup`); labels become soft.

    Padding rows of a short last batch and out-of-bag rows (weight 0) are never
    mixed into real ones; ``α = 0`` turns mixing off.

    Example:
      >>> batch = {"x": jnp.ones((4, 40)), "y": jnp.array([0, 1, 2, 3]), "weight": jnp.ones(4)}
      >>> out = mixup(num_classes=4)(jax.random.key(0), batch, hparams={"mixup_alpha": 0.4})
      >>> out["y"].shape, [round(v, 4) for v in out["y"].sum(axis=1).tolist()]  # soft labels
      ((4, 4), [1.0, 1.0, 1.0, 1.0])
    """

    @takes("hparams")
    def transform(key: jax.Array, batch: Batch, *, hparams: Hparams | None = None) -> Batch:
        alpha = _value(hparams, name, default)
        x, y = mix.mixup(
            key, batch["x"], batch["y"], alpha, num_classes=num_classes, weight=batch.get("weight")
        )
        return {**batch, "x": x, "y": y}

    return transform


def augmentation(
    make: Callable[[ArrayLike], Callable[[jax.Array, jax.Array], jax.Array]],
    name: str = "augment_strength",
    default: ArrayLike | None = 1.0,
) -> Transform:
    """Input augmentation whose magnitude is ``hparams[name]``.

    ``make(strength)`` returns a ``(key, x) -> x`` augmentation, e.g.
    :func:`jaxreg.augment.signal.mnist1d_pipeline`; it is called at trace
    time with the (possibly traced) strength, so the pipeline is never rebuilt
    per value.

    Example:
      >>> batch = {"x": jnp.ones((4, 40)), "y": jnp.array([0, 1, 2, 3]), "weight": jnp.ones(4)}
      >>> from jaxreg.augment import signal
      >>> augment = augmentation(signal.mnist1d_pipeline)
      >>> out = augment(jax.random.key(0), batch, hparams={"augment_strength": 1.0})
      >>> out["x"].shape, bool(jnp.all(out["y"] == batch["y"]))
      ((4, 40), True)
    """

    @takes("hparams")
    def transform(key: jax.Array, batch: Batch, *, hparams: Hparams | None = None) -> Batch:
        strength = _value(hparams, name, default)
        return {**batch, "x": make(strength)(key, batch["x"])}

    return transform


def chain(*transforms: Transform) -> Transform:
    """Apply transforms in order, each with its own key folded from the step key.

    Plain ``(key, batch) -> batch`` functions may be mixed with the
    hyperparameter-aware ones above.

    Example:
      >>> batch = {"x": jnp.ones((4, 40)), "y": jnp.array([0, 1, 2, 3]), "weight": jnp.ones(4)}
      >>> def drop_last(key, batch):  # a plain transform mixes in
      ...     return {**batch, "weight": batch["weight"].at[-1].set(0.0)}
      >>> transform = chain(input_noise(), drop_last)
      >>> out = transform(jax.random.key(0), batch, hparams={"noise_std": 0.1})
      >>> out["weight"].tolist()
      [1.0, 1.0, 1.0, 0.0]
    """
    wanted = ["hparams" in keywords_of(t) for t in transforms]

    @takes("hparams")
    def transform(key: jax.Array, batch: Batch, *, hparams: Hparams | None = None) -> Batch:
        for index, (fn, takes_hparams) in enumerate(zip(transforms, wanted, strict=True)):
            sub = jax.random.fold_in(key, index)
            batch = fn(sub, batch, hparams=hparams) if takes_hparams else fn(sub, batch)
        return batch

    return transform
