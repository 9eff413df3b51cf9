"""Text augmentation (EDA: Wei & Zou, 2019) on padded token batches.

Tokens are ``(N, T)`` integer ids, right-padded with ``pad_id``; ``lengths``
``(N,)`` count the real tokens. Every function returns ``(tokens, lengths)``
with the same shapes, never an id outside ``[0, vocab_size)`` (inserted and
substituted ids come from the batch itself, the synonym table or
``[min_id, vocab_size)``), never a length beyond ``T``, and padding positions
always equal ``pad_id``.

Back-translation needs a translation model, which jaxreg does not ship:
:func:`host_transform` is the hook that runs any host-side function (e.g.
translate to another language and back, then re-tokenize) inside a jitted
pipeline via ``jax.pure_callback``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxreg._checks import check_interval, is_traced

__all__ = [
    "host_transform",
    "random_deletion",
    "random_insertion",
    "random_swap",
    "synonym_replacement",
]

Tokens = tuple[jax.Array, jax.Array]


def _check(tokens: ArrayLike, lengths: ArrayLike) -> Tokens:
    tokens, lengths = jnp.asarray(tokens), jnp.asarray(lengths)
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(
            f"tokens must be integer ids shaped (N, T), got {tokens.dtype}{tokens.shape}"
        )
    if lengths.shape != tokens.shape[:1]:
        raise ValueError(f"lengths must have shape ({tokens.shape[0]},), got {lengths.shape}")
    if not is_traced(lengths):
        values = np.asarray(lengths)
        if np.any(values < 0) or np.any(values > tokens.shape[1]):
            raise ValueError(f"lengths must lie in [0, {tokens.shape[1]}]")
    return tokens, lengths.astype(jnp.int32)


def _repad(tokens: jax.Array, lengths: jax.Array, pad_id: int) -> jax.Array:
    positions = jnp.arange(tokens.shape[1])
    return jnp.where(positions[None, :] < lengths[:, None], tokens, pad_id).astype(tokens.dtype)


def random_deletion(
    key: jax.Array, tokens: ArrayLike, lengths: ArrayLike, rate: ArrayLike, *, pad_id: int = 0
) -> Tokens:
    """Delete each real token with probability ``rate``; at least one token survives.

    Example:
      >>> toks, lens = random_deletion(jax.random.key(0), jnp.array([[5, 6, 7, 0]]),
      ...                              jnp.array([3]), 0.0)
      >>> toks.tolist(), lens.tolist()
      ([[5, 6, 7, 0]], [3])
    """
    check_interval(rate, "rate", 0.0, 1.0, closed_high=True)
    tokens, lengths = _check(tokens, lengths)
    width = tokens.shape[1]
    positions = jnp.arange(width)

    def delete(k, row, length):
        drop_key, keep_key = jax.random.split(k)
        real = positions < length
        keep = real & ~jax.random.bernoulli(drop_key, rate, (width,))
        rescue = jax.random.randint(keep_key, (), 0, jnp.maximum(length, 1))
        keep = jnp.where(jnp.any(keep) | (length == 0), keep, positions == rescue)
        order = jnp.argsort(~keep, stable=True)
        return row[order], jnp.sum(keep).astype(jnp.int32)

    out, new_lengths = jax.vmap(delete)(jax.random.split(key, tokens.shape[0]), tokens, lengths)
    return _repad(out, new_lengths, pad_id), new_lengths


def random_swap(
    key: jax.Array, tokens: ArrayLike, lengths: ArrayLike, num_swaps: int = 1
) -> Tokens:
    """Swap two random real tokens, ``num_swaps`` times per example.

    Example:
      >>> toks, lens = random_swap(jax.random.key(0), jnp.array([[5, 6, 7, 0]]), jnp.array([3]))
      >>> sorted(toks[0, :3].tolist()), toks[0, 3].tolist(), lens.tolist()  # padding kept
      ([5, 6, 7], 0, [3])
    """
    tokens, lengths = _check(tokens, lengths)

    def swap_row(k, row, length):
        def body(i, row):
            ka, kb = jax.random.split(jax.random.fold_in(k, i))
            a = jax.random.randint(ka, (), 0, jnp.maximum(length, 1))
            b = jax.random.randint(kb, (), 0, jnp.maximum(length, 1))
            return row.at[a].set(row[b]).at[b].set(row[a])

        return jax.lax.fori_loop(0, num_swaps, body, row)

    out = jax.vmap(swap_row)(jax.random.split(key, tokens.shape[0]), tokens, lengths)
    return out, lengths


def _check_synonyms(synonyms: ArrayLike, vocab_size: int) -> jax.Array:
    synonyms = jnp.asarray(synonyms)
    if synonyms.ndim != 2 or synonyms.shape[0] != vocab_size:
        raise ValueError(
            f"synonyms must be shaped (vocab_size={vocab_size}, num_candidates), "
            f"got {synonyms.shape}"
        )
    if not is_traced(synonyms):
        values = np.asarray(synonyms)
        if np.any(values >= vocab_size) or np.any(values < -1):
            raise ValueError("synonyms entries must be ids in [0, vocab_size) or -1 for none")
    return synonyms


def _pick_synonym(k: jax.Array, token: jax.Array, synonyms: jax.Array) -> tuple[jax.Array, ...]:
    """A uniformly random valid candidate for ``token`` and whether one exists."""
    candidates = synonyms[token]
    valid = candidates >= 0
    scores = jnp.where(valid, jax.random.uniform(k, candidates.shape), -1.0)
    return candidates[jnp.argmax(scores)], jnp.any(valid)


def synonym_replacement(
    key: jax.Array,
    tokens: ArrayLike,
    lengths: ArrayLike,
    synonyms: ArrayLike,
    rate: ArrayLike,
    *,
    vocab_size: int | None = None,
) -> Tokens:
    """Replace each real token, with probability ``rate``, by a random synonym.

    Args:
      synonyms: ``(vocab_size, S)`` table of candidate ids per token, ``-1``
        where there are fewer than ``S``; tokens without candidates stay.
      vocab_size: defaults to ``synonyms.shape[0]``.

    Example:
      >>> synonyms = jnp.array([[-1], [-1], [3], [2]])  # 2 <-> 3 are synonyms
      >>> tokens, lengths = jnp.array([[1, 2, 3, 0]]), jnp.array([3])
      >>> toks, lens = synonym_replacement(jax.random.key(0), tokens, lengths, synonyms, rate=1.0)
      >>> toks.tolist()
      [[1, 3, 2, 0]]
    """
    check_interval(rate, "rate", 0.0, 1.0, closed_high=True)
    tokens, lengths = _check(tokens, lengths)
    synonyms = _check_synonyms(synonyms, vocab_size or jnp.shape(synonyms)[0])
    width = tokens.shape[1]

    def replace(k, row, length):
        coin_key, pick_key = jax.random.split(k)
        coins = jax.random.bernoulli(coin_key, rate, (width,)) & (jnp.arange(width) < length)
        picked, has = jax.vmap(_pick_synonym, in_axes=(0, 0, None))(
            jax.random.split(pick_key, width), row, synonyms
        )
        return jnp.where(coins & has, picked, row).astype(row.dtype)

    out = jax.vmap(replace)(jax.random.split(key, tokens.shape[0]), tokens, lengths)
    return out, lengths


def random_insertion(
    key: jax.Array,
    tokens: ArrayLike,
    lengths: ArrayLike,
    num_insertions: int = 1,
    *,
    vocab_size: int,
    synonyms: ArrayLike | None = None,
    min_id: int = 1,
    pad_id: int = 0,
) -> Tokens:
    """Insert ``num_insertions`` tokens at random positions (skipped when the row is full).

    As in EDA, the inserted token is a synonym of a random token of the row
    when a ``synonyms`` table is given (falling back to that token itself);
    otherwise a uniform id in ``[min_id, vocab_size)``.

    Example:
      >>> tokens, lengths = jnp.array([[5, 6, 0, 0]]), jnp.array([2])
      >>> toks, lens = random_insertion(jax.random.key(0), tokens, lengths, 2, vocab_size=10)
      >>> lens.tolist(), bool(jnp.all(toks[0, :4] > 0))
      ([4], True)
    """
    tokens, lengths = _check(tokens, lengths)
    if not 0 <= min_id < vocab_size:
        raise ValueError(f"min_id must lie in [0, vocab_size), got {min_id}")
    table = None if synonyms is None else _check_synonyms(synonyms, vocab_size)
    width = tokens.shape[1]
    positions = jnp.arange(width)

    def insert_row(k, row, length):
        def body(i, carry):
            row, length = carry
            kp, kt, ks = jax.random.split(jax.random.fold_in(k, i), 3)
            where = jax.random.randint(kp, (), 0, length + 1)
            if table is None:
                new = jax.random.randint(kt, (), min_id, vocab_size)
            else:
                source = row[jax.random.randint(kt, (), 0, jnp.maximum(length, 1))]
                synonym, has = _pick_synonym(ks, source, table)
                new = jnp.where(has, synonym, source)
            shifted = jnp.where(
                positions < where, row, jnp.where(positions == where, new, jnp.roll(row, 1))
            )
            room = length < width
            return jnp.where(room, shifted, row).astype(row.dtype), length + room

        return jax.lax.fori_loop(0, num_insertions, body, (row, length))

    out, new_lengths = jax.vmap(insert_row)(jax.random.split(key, tokens.shape[0]), tokens, lengths)
    return _repad(out, new_lengths, pad_id), new_lengths


def host_transform(
    fn: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> Callable[[jax.Array, Tokens], Tokens]:
    """Wrap a host-side ``fn(tokens, lengths) -> (tokens, lengths)`` as a pipeline stage.

    The hook for back-translation: ``fn`` receives NumPy arrays (e.g. to
    detokenize, translate there and back with a model of your choice, and
    re-tokenize), and must return arrays of the same shapes and dtypes. It
    runs via ``jax.pure_callback``, so the stage works inside ``jit``. The key
    is ignored (``fn`` owns its randomness).

    Example:
      >>> import numpy as np
      >>> reverse = host_transform(lambda toks, lens: (np.flip(toks, axis=1).copy(), lens))
      >>> toks, lens = jax.jit(reverse)(jax.random.key(0), (jnp.array([[1, 2, 3]]), jnp.array([3])))
      >>> toks.tolist()
      [[3, 2, 1]]
    """

    def transform(key: jax.Array, batch: Tokens) -> Tokens:
        del key
        tokens, lengths = _check(*batch)
        shapes = (
            jax.ShapeDtypeStruct(tokens.shape, tokens.dtype),
            jax.ShapeDtypeStruct(lengths.shape, lengths.dtype),
        )

        def host(t, n):
            new_tokens, new_lengths = fn(np.array(t), np.array(n))
            return (np.asarray(new_tokens, tokens.dtype), np.asarray(new_lengths, lengths.dtype))

        return jax.pure_callback(host, shapes, tokens, lengths)

    return transform
