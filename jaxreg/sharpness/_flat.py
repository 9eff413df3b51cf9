"""Curvature products on flat vectors, shared by Lanczos, Hutch++ and SLQ."""

from __future__ import annotations

from collections.abc import Callable

import chex
from jax.flatten_util import ravel_pytree


def flattened_operator(product: Callable, params: chex.ArrayTree):
    """``(v -> flat(product(unflat(v))), flat params, unravel)`` for a pytree product."""
    flat, unravel = ravel_pytree(params)
    return (lambda v: ravel_pytree(product(unravel(v)))[0]), flat, unravel
