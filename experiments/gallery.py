"""A gallery of models written as Flax NNX, Flax Linen and Equinox document them, unchanged.

Each model below is the framework's own idiom — no ``train`` argument in NNX
(``model.train()``/``model.eval()`` switch it), ``nn.Dropout(self.rate,
deterministic=not train)`` in Linen, ``eqx.nn.Dropout`` with a key in Equinox —
and each is trained, swept and analysed by jaxreg through its bridge:

* ``nnx_cnn``: the Flax NNX MNIST tutorial's CNN (conv, BatchNorm, dropout) on 8×8 digits;
* ``linen_resnet``: a ResNet in the style of the Flax examples (BatchNorm,
  ``batch_stats``) on 8×8 digits;
* ``equinox_cnn``: the Equinox documentation's CNN, with dropout, on 8×8 digits;
* ``transformer``: a Transformer encoder classifier (``nnx.MultiHeadAttention``,
  LayerNorm, embeddings, dropout on attention and residuals) on a majority-token task;
* ``gru``: a GRU (``nnx.RNN`` over ``nnx.GRUCell``) reading MNIST-1D as a sequence.

``python -m experiments.gallery [--quick]`` trains each with one sweep over its
regularization strengths, chooses on validation, and prints test accuracy (read
once, last). The tests (``tests/test_gallery.py``) run the same builders small.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import equinox as eqx
import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jaxreg
from experiments.common import DEFAULT_OUT
from jaxreg.io import write_json

# --- Flax NNX: the MNIST tutorial CNN (BatchNorm variant) ----------------------------


class NNXCNN(nnx.Module):
    """The Flax NNX MNIST tutorial's CNN; widths and input size are arguments."""

    def __init__(self, *, rngs: nnx.Rngs, image: int = 28, features=(32, 64), hidden: int = 256):
        self.conv1 = nnx.Conv(1, features[0], kernel_size=(3, 3), rngs=rngs)
        self.batch_norm1 = nnx.BatchNorm(features[0], rngs=rngs)
        self.dropout1 = nnx.Dropout(rate=0.025, rngs=rngs)
        self.conv2 = nnx.Conv(features[0], features[1], kernel_size=(3, 3), rngs=rngs)
        self.batch_norm2 = nnx.BatchNorm(features[1], rngs=rngs)
        self.avg_pool = partial(nnx.avg_pool, window_shape=(2, 2), strides=(2, 2))
        self.linear1 = nnx.Linear((image // 4) ** 2 * features[1], hidden, rngs=rngs)
        self.dropout2 = nnx.Dropout(rate=0.025, rngs=rngs)
        self.linear2 = nnx.Linear(hidden, 10, rngs=rngs)

    def __call__(self, x):
        x = self.avg_pool(nnx.relu(self.batch_norm1(self.dropout1(self.conv1(x)))))
        x = self.avg_pool(nnx.relu(self.batch_norm2(self.conv2(x))))
        x = x.reshape(x.shape[0], -1)  # flatten
        x = nnx.relu(self.dropout2(self.linear1(x)))
        return self.linear2(x)


# --- Flax Linen: a ResNet as in the Flax examples ----------------------------------


class ResNetBlock(linen.Module):
    """The Flax examples' ResNet block."""

    filters: int
    conv: Any
    norm: Any
    act: Callable
    strides: tuple[int, int] = (1, 1)

    @linen.compact
    def __call__(self, x):
        residual = x
        y = self.conv(self.filters, (3, 3), self.strides)(x)
        y = self.norm()(y)
        y = self.act(y)
        y = self.conv(self.filters, (3, 3))(y)
        y = self.norm(scale_init=linen.initializers.zeros_init())(y)
        if residual.shape != y.shape:
            residual = self.conv(self.filters, (1, 1), self.strides, name="conv_proj")(residual)
            residual = self.norm(name="norm_proj")(residual)
        return self.act(residual + y)


class LinenResNet(linen.Module):
    """The Flax examples' ResNet (``stage_sizes``, ``num_filters``), small by default."""

    stage_sizes: tuple[int, ...] = (1, 1)
    num_classes: int = 10
    num_filters: int = 16

    @linen.compact
    def __call__(self, x, train: bool = True):
        conv = partial(linen.Conv, use_bias=False)
        norm = partial(linen.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5)
        x = conv(self.num_filters, (3, 3), name="conv_init")(x)
        x = linen.relu(norm(name="bn_init")(x))
        for i, block_size in enumerate(self.stage_sizes):
            for j in range(block_size):
                strides = (2, 2) if i > 0 and j == 0 else (1, 1)
                x = ResNetBlock(
                    self.num_filters * 2**i, conv=conv, norm=norm, act=linen.relu, strides=strides
                )(x)
        x = jnp.mean(x, axis=(1, 2))
        return linen.Dense(self.num_classes)(x)


# --- Equinox: the documentation's CNN, with dropout ---------------------------------


class EquinoxCNN(eqx.Module):
    """The Equinox MNIST tutorial's CNN (one example at a time), with ``eqx.nn.Dropout``."""

    layers: list
    dropout: eqx.nn.Dropout

    def __init__(
        self, key, *, image: int = 28, hidden: int = 512, width: int = 64, rate: float = 0.1
    ):
        key1, key2, key3, key4 = jax.random.split(key, 4)
        flat = 3 * (image - 4) ** 2
        self.layers = [
            eqx.nn.Conv2d(1, 3, kernel_size=4, key=key1),
            eqx.nn.MaxPool2d(kernel_size=2),
            jax.nn.relu,
            jnp.ravel,
            eqx.nn.Linear(flat, hidden, key=key2),
            jax.nn.sigmoid,
            eqx.nn.Linear(hidden, width, key=key3),
            jax.nn.relu,
            eqx.nn.Linear(width, 10, key=key4),
        ]
        self.dropout = eqx.nn.Dropout(rate)

    def __call__(self, x, *, key=None):
        for layer in self.layers[:-1]:
            x = layer(x)
        return self.layers[-1](self.dropout(x, key=key))


# --- Flax NNX: a Transformer encoder classifier ------------------------------------


class EncoderBlock(nnx.Module):
    """Pre-LayerNorm encoder block: attention and MLP, each with dropout on the residual."""

    def __init__(self, dim: int, heads: int, *, rngs: nnx.Rngs, rate: float = 0.1):
        self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(
            num_heads=heads, in_features=dim, dropout_rate=rate, decode=False, rngs=rngs
        )
        self.dropout1 = nnx.Dropout(rate, rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
        self.mlp1 = nnx.Linear(dim, 2 * dim, rngs=rngs)
        self.mlp2 = nnx.Linear(2 * dim, dim, rngs=rngs)
        self.dropout2 = nnx.Dropout(rate, rngs=rngs)

    def __call__(self, x):
        x = x + self.dropout1(self.attention(self.norm1(x)))
        return x + self.dropout2(self.mlp2(nnx.gelu(self.mlp1(self.norm2(x)))))


class TransformerClassifier(nnx.Module):
    """Token and position embeddings, encoder blocks, mean pooling, a linear head."""

    def __init__(self, *, vocab: int, length: int, dim: int, heads: int, depth: int,
                 classes: int, rngs: nnx.Rngs):  # fmt: skip
        self.tokens = nnx.Embed(vocab, dim, rngs=rngs)
        self.positions = nnx.Embed(length, dim, rngs=rngs)
        self.blocks = nnx.List([EncoderBlock(dim, heads, rngs=rngs) for _ in range(depth)])
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.head = nnx.Linear(dim, classes, rngs=rngs)

    def __call__(self, tokens):
        x = self.tokens(tokens) + self.positions(jnp.arange(tokens.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(axis=1))


# --- Flax NNX: a GRU over MNIST-1D read as a sequence --------------------------------


class GRUClassifier(nnx.Module):
    """``nnx.RNN`` over an ``nnx.GRUCell``; the last hidden state, dropout, a linear head."""

    def __init__(self, *, hidden: int, rngs: nnx.Rngs, classes: int = 10):
        self.rnn = nnx.RNN(nnx.GRUCell(1, hidden, rngs=rngs))
        self.dropout = nnx.Dropout(0.1, rngs=rngs)
        self.head = nnx.Linear(hidden, classes, rngs=rngs)

    def __call__(self, x):
        h = self.rnn(x[..., None])[:, -1]  # (batch, time) -> (batch, time, 1) -> last state
        return self.head(self.dropout(h))


# --- Tasks -------------------------------------------------------------------------


def majority_tokens(key: jax.Array, n: int, length: int = 16, vocab: int = 6):
    """Sequences of ``length`` tokens; the label says whether token 1 outnumbers token 2.

    Tokens 3.. are distractors, so the model must attend to counts, not positions.

    Example:
      >>> x, y = majority_tokens(jax.random.key(0), 4)
      >>> x.shape, sorted(set(np.asarray(y).tolist())) <= [0, 1]
      ((4, 16), True)
    """
    tokens = jax.random.randint(key, (n, length), 1, vocab)
    ones, twos = (tokens == 1).sum(axis=1), (tokens == 2).sum(axis=1)
    tokens = jnp.where((ones == twos)[:, None] & (jnp.arange(length) == 0), 1, tokens)
    return tokens, ((tokens == 1).sum(axis=1) > (tokens == 2).sum(axis=1)).astype(jnp.int32)


def digit_images(n: int | None = None):
    """scikit-learn's 8×8 digits as ``(n, 8, 8, 1)`` images in [0, 1]: train, test."""
    data = jaxreg.data.digits()
    return (data.x_train[:n], data.y_train[:n]), (data.x_test, data.y_test)


@dataclass(frozen=True)
class Entry:
    """One gallery model: how to build it as a :class:`jaxreg.nn.Model` at a given size.

    Attributes:
      framework: ``"nnx"``, ``"linen"`` or ``"equinox"``.
      build: ``(key, small, rate) -> Model``; ``small`` gives the width the dense-Hessian
        tests use; ``rate`` is written into the stock dropout layers (None: swept by name).
      swept: the regularization hyperparameter swept beside ``weight_decay``.
      task: ``"digits"``, ``"majority"`` or ``"mnist1d"``.
      channels_first: images as ``(1, 8, 8)`` (Equinox's convention) instead of ``(8, 8, 1)``.
    """

    framework: str
    build: Callable[..., jaxreg.nn.Model]
    swept: str
    task: str
    channels_first: bool = False


def _nnx_cnn(key, small: bool, rate: float | None):
    module = NNXCNN(
        rngs=nnx.Rngs(key), image=8, features=(4, 4) if small else (32, 64),
        hidden=8 if small else 256,
    )  # fmt: skip
    if rate is not None:
        module.dropout1.rate = module.dropout2.rate = rate
        return jaxreg.nn.from_nnx(module)
    return jaxreg.nn.from_nnx(module, rates={"dropout_rate": "*"})


def _linen_resnet(key, small: bool, rate: float | None):
    del rate  # the Flax examples' ResNet has no dropout: its sweep is over learning rate
    net = LinenResNet(num_filters=2 if small else 16)
    return jaxreg.nn.from_linen(net, net.init(key, jnp.ones((1, 8, 8, 1)), train=False))


def _equinox_cnn(key, small: bool, rate: float | None):
    net = EquinoxCNN(
        key, image=8, hidden=8 if small else 128, width=8 if small else 64,
        rate=0.1 if rate is None else rate,
    )  # fmt: skip
    if rate is not None:
        return jaxreg.nn.from_equinox(net)
    return jaxreg.nn.from_equinox(net, fields={"dropout_rate": lambda m: m.dropout.p})


def _transformer(key, small: bool, rate: float | None):
    dim = 8 if small else 32
    module = TransformerClassifier(
        vocab=6, length=16, dim=dim, heads=2, depth=1 if small else 2, classes=2,
        rngs=nnx.Rngs(key),
    )  # fmt: skip
    residual = [f"blocks.{i}.dropout{j}" for i in range(len(module.blocks)) for j in (1, 2)]
    if rate is not None:
        for block in module.blocks:
            block.dropout1.rate = block.dropout2.rate = rate
        return jaxreg.nn.from_nnx(module)
    return jaxreg.nn.from_nnx(module, rates={"dropout_rate": residual})


def _gru(key, small: bool, rate: float | None):
    module = GRUClassifier(hidden=4 if small else 64, rngs=nnx.Rngs(key))
    if rate is not None:
        module.dropout.rate = rate
        return jaxreg.nn.from_nnx(module)
    return jaxreg.nn.from_nnx(module, rates={"dropout_rate": "dropout"})


#: The gallery, by name.
#:
#: Example:
#:   >>> sorted(GALLERY)
#:   ['equinox_cnn', 'gru', 'linen_resnet', 'nnx_cnn', 'transformer']
GALLERY: dict[str, Entry] = {
    "nnx_cnn": Entry("nnx", _nnx_cnn, "dropout_rate", "digits"),
    "linen_resnet": Entry("linen", _linen_resnet, "learning_rate", "digits"),
    "equinox_cnn": Entry("equinox", _equinox_cnn, "dropout_rate", "digits", channels_first=True),
    "transformer": Entry("nnx", _transformer, "dropout_rate", "majority"),
    "gru": Entry("nnx", _gru, "dropout_rate", "mnist1d"),
}


def optimizer(hparams) -> optax.GradientTransformation:
    """Adam at ``learning_rate`` (default 3e-3) with decoupled ``weight_decay``."""
    learning_rate = hparams.get("learning_rate", 3e-3)
    return optax.chain(
        optax.adam(learning_rate),
        jaxreg.transforms.decoupled_weight_decay(hparams["weight_decay"]),
    )


def task_data(entry: Entry, quick: bool):
    """``(train, val, held-out test)`` for an entry's task; validation split from train."""
    task = entry.task
    if task == "digits":
        (x, y), test = digit_images()
        if entry.channels_first:
            x, test = np.moveaxis(x, -1, 1), (np.moveaxis(test[0], -1, 1), test[1])
    elif task == "majority":
        x, y = majority_tokens(jax.random.key(0), 1200 if quick else 4000)
        test = majority_tokens(jax.random.key(1), 1000)
    else:
        data = jaxreg.data.mnist1d()
        x, y, test = data.x_train, data.y_train, (data.x_test, data.y_test)
    x_train, y_train, x_val, y_val = jaxreg.data.train_val_split(
        jax.random.key(0), x, y, val_fraction=0.2
    )
    held_out = jaxreg.data.HeldOut(np.asarray(test[0]), np.asarray(test[1]))
    return (x_train, y_train), (x_val, y_val), held_out


def _grid(entry: Entry, quick: bool):
    strengths = [0.0, 0.3] if quick else [0.0, 0.1, 0.3]
    values = [1e-3, 3e-3] if entry.swept == "learning_rate" else strengths
    return jaxreg.sweeps.grid(**{entry.swept: values, "weight_decay": [0.0, 1e-4]})


def run_entry(name: str, quick: bool) -> dict[str, Any]:
    """Sweep one gallery model, choose on validation, read test once for the choice."""
    entry = GALLERY[name]
    train, val, held_out = task_data(entry, quick)
    model = entry.build(jax.random.key(0), False, None)
    epochs = 3 if quick else 30

    def train_fn(config, key):
        result = jaxreg.fit(model, model.params, optimizer, train, key=key, hparams=config,
                            num_epochs=epochs, batch_size=64, eval_data=val)  # fmt: skip
        return {"val_accuracy": result.history["eval_accuracy"].max(),
                "params": result.params, "state": result.model_state}  # fmt: skip

    start = time.perf_counter()
    configs = _grid(entry, quick)
    sweep = jaxreg.sweeps.run(train_fn, configs, key=jax.random.key(1), progress=False)
    best = int(np.argmax(np.where(sweep.failed, -1.0, sweep.metrics["val_accuracy"])))
    chosen = jax.tree.map(lambda a: a[best], (sweep.metrics["params"], sweep.metrics["state"]))
    held_out.unlock()
    x_test, y_test = held_out.read()
    test = jaxreg.evaluate(model, chosen[0], x_test, y_test, state=chosen[1])
    return {
        "framework": entry.framework,
        "chosen": {k: float(v[best]) for k, v in configs.items()},
        "val_accuracy": float(sweep.metrics["val_accuracy"][best]),
        "test_accuracy": float(test["accuracy"]),
        "configs": len(next(iter(configs.values()))),
        "seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and configs")
    parser.add_argument("--only", nargs="*", choices=sorted(GALLERY), help="some models")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for gallery.json")
    args = parser.parse_args(argv)
    results = {}
    for name in args.only or list(GALLERY):
        results[name] = run_entry(name, args.quick)
        r = results[name]
        print(
            f"{name:13s} {r['framework']:8s} val {r['val_accuracy']:.3f} "
            f"test {r['test_accuracy']:.3f}  {r['chosen']}  {r['seconds']:.0f} s",
            flush=True,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "gallery.json", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
