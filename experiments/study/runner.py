"""Turn each :class:`~experiments.study.spec.Row` into sweeps: tune on validation, then train seeds.

Protocol (every choice on validation, test read once at the end):

1. A fixed validation split (``StudyConfig.val_size`` examples, permutation
   seeded by ``split_seed``) is carved from the training set; every row trains
   on the rest.
2. **Tuning**: the row's grid × ``tune_seeds`` is one :func:`jaxreg.sweeps.run`
   compile; the value with the best mean validation accuracy wins (a row that
   chooses by the marginal likelihood trains on training + validation data and
   takes the best mean evidence instead).
3. **Final**: the chosen value × ``seeds`` fresh seeds (the same seeds for every
   row, so differences to the baseline are paired) is a second sweep.
4. Only after every row is chosen does :meth:`HeldOut.unlock` open the test
   split; final models and, for the regularization-paths figure, the tuning
   members are then evaluated on it once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments.study.models import MODELS, model_apply
from experiments.study.spec import (
    LEARNING_RATE,
    Row,
    adam,
    combination_space,
    combined_optimizer,
    combined_transform,
)
from jaxreg import ensembles, sweeps
from jaxreg.data import HeldOut
from jaxreg.nn import functional
from jaxreg.training import EarlyStopping, fit

#: The learning rate and schedule of every single-regularizer row, as combination values.
SINGLE_ROW_SCHEDULE = {"learning_rate": LEARNING_RATE, "lr_decay": 0.0}

__all__ = [
    "StudyConfig",
    "StudyData",
    "Trained",
    "prepare_data",
    "run_row",
    "search",
    "training_data",
]


@dataclass(frozen=True)
class StudyConfig:
    """Sizes of a study run; :meth:`quick` keeps every row and section but trains briefly.

    ``compile_level`` is XLA's backend optimization level for the study's programs
    (``None``: XLA's default, 2). Level 1 compiles a training sweep in about two
    thirds of the time and, measured on a 2-core CPU, runs it as fast.

    Example:
      >>> StudyConfig().seeds, StudyConfig().epochs, StudyConfig().val_size
      (5, 100, 500)
      >>> quick = StudyConfig.quick()  # every row and section, briefly (the CI smoke run)
      >>> quick.epochs, quick.seeds
      (12, 2)
    """

    seeds: int = 5
    tune_seeds: int = 2
    epochs: int = 100
    wide_epochs: int = 150
    cnn_epochs: int = 100
    batch_size: int = 100
    val_size: int = 500
    split_seed: int = 0
    search_configs: int = 32
    search_seeds: int = 1
    sharpness_iters: int = 20
    compile_level: int | None = 1

    @classmethod
    def quick(cls, seeds: int = 2) -> StudyConfig:
        return cls(
            seeds=seeds,
            tune_seeds=1,
            epochs=12,
            wide_epochs=6,
            cnn_epochs=6,
            search_configs=8,
            sharpness_iters=8,
        )


@dataclass(frozen=True)
class StudyData:
    """Training, validation and the locked test split.

    Example:
      >>> from jaxreg.data import Dataset
      >>> rng = np.random.default_rng(0)  # a stand-in for MNIST-1D: 40 features, 10 classes
      >>> dataset = Dataset(rng.normal(size=(300, 40)).astype(np.float32), rng.integers(0, 10, 300),
      ...                   rng.normal(size=(50, 40)).astype(np.float32), rng.integers(0, 10, 50))
      >>> config = StudyConfig(seeds=2, tune_seeds=1, epochs=1, val_size=100, search_configs=2,
      ...                      search_seeds=1)
      >>> data = prepare_data(dataset, config)
      >>> len(data.y_train), len(data.y_val), len(data.test), data.test.locked
      (200, 100, 50, True)
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    test: HeldOut


def prepare_data(dataset, config: StudyConfig) -> StudyData:
    """Carve ``config.val_size`` validation examples from ``dataset``'s training set.

    Example:
      >>> from jaxreg.data import Dataset
      >>> rng = np.random.default_rng(0)  # a stand-in for MNIST-1D: 40 features, 10 classes
      >>> dataset = Dataset(rng.normal(size=(300, 40)).astype(np.float32), rng.integers(0, 10, 300),
      ...                   rng.normal(size=(50, 40)).astype(np.float32), rng.integers(0, 10, 50))
      >>> data = prepare_data(dataset, StudyConfig(val_size=100, split_seed=0))
      >>> again = prepare_data(dataset, StudyConfig(val_size=100, split_seed=0))
      >>> len(data.x_val), bool((data.x_val == again.x_val).all())  # a fixed, seeded split
      (100, True)
    """
    x, y = np.asarray(dataset.x_train), np.asarray(dataset.y_train)
    if not 0 < config.val_size < len(y):
        raise ValueError(f"val_size must lie in (0, {len(y)}), got {config.val_size}")
    order = np.random.default_rng(config.split_seed).permutation(len(y))
    val, train = order[: config.val_size], order[config.val_size :]
    return StudyData(
        x[train], y[train], x[val], y[val], HeldOut(np.asarray(dataset.x_test), dataset.y_test)
    )


def _make_model(row: Row) -> Callable[[nnx.Rngs], nnx.Module]:
    if row.model not in MODELS:
        raise ValueError(
            f"row {row.name!r}: model must be one of {sorted(MODELS)}, got {row.model!r}"
        )
    return MODELS[row.model]


def compiler_options(config: StudyConfig) -> dict[str, int] | None:
    """XLA compile options for the study's programs (``config.compile_level``).

    Example:
      >>> compiler_options(StudyConfig())
      {'xla_backend_optimization_level': 1}
      >>> compiler_options(StudyConfig(compile_level=None)) is None
      True
    """
    if config.compile_level is None:
        return None
    return {"xla_backend_optimization_level": config.compile_level}


def epochs_for(row: Row, config: StudyConfig) -> int:
    base = {"mlp": config.epochs, "wide_mlp": config.wide_epochs, "cnn": config.cnn_epochs}
    return base[row.model] * row.epoch_factor


@dataclass
class Trained:
    """One sweep's members: ``params`` with a leading member axis (``configs × seeds ×
    ensemble members`` flattened), per-member validation accuracy and curves.

    Example:
      >>> trained = Trained(
      ...     apply=None, params=None, configs={"dropout_rate": np.array([0.1, 0.1, 0.3, 0.3])},
      ...     config_index=np.array([0, 0, 1, 1]), val_accuracy=np.array([0.60, 0.62, 0.65, 0.66]),
      ...     train_accuracy=np.ones(4), val_curve=None, train_curve=None,
      ...     failed=np.array([False, False, False, False]), members_per_seed=1)
      >>> choose(trained)  # the best mean validation accuracy over seeds
      (1, {'dropout_rate': 0.3})
    """

    apply: Callable
    params: Any
    configs: dict[str, np.ndarray]
    config_index: np.ndarray
    val_accuracy: np.ndarray
    train_accuracy: np.ndarray
    val_curve: np.ndarray
    train_curve: np.ndarray
    failed: np.ndarray
    members_per_seed: int
    score: np.ndarray | None = None

    def selection_score(self) -> np.ndarray:
        """What :func:`choose` maximizes: the row's evidence, else validation accuracy."""
        return self.val_accuracy if self.score is None else self.score


def training_data(row: Row, data: StudyData) -> tuple[np.ndarray, np.ndarray]:
    """The examples ``row`` trains on: the training split, or training + validation for a
    row that chooses by the evidence (it needs no held-out data).

    Example:
      >>> data = StudyData(np.zeros((3, 2)), np.zeros(3), np.ones((1, 2)), np.ones(1), None)
      >>> len(training_data(Row("L2", "penalty"), data)[1])
      3
      >>> len(training_data(Row("L2", "by evidence", evidence=lambda *a: 0.0), data)[1])
      4
    """
    if row.evidence is None:
        return np.asarray(data.x_train), np.asarray(data.y_train)
    return (
        np.concatenate([data.x_train, data.x_val]),
        np.concatenate([data.y_train, data.y_val]),
    )


def _member_weights(row: Row, key: jax.Array, n: int, dtype) -> jax.Array:
    """Per-member example weights: bootstrap counts for bagging, ones otherwise."""
    if row.ensemble_members > 1 and row.bootstrap:
        return ensembles.bootstrap_weights(key, row.ensemble_members, n)
    return jnp.ones((row.ensemble_members, n), dtype)


def _train_fn(row: Row, data: StudyData, config: StudyConfig):
    make = _make_model(row)
    apply = model_apply(row.model)
    epochs = epochs_for(row, config)
    batch_size = row.batch_size or config.batch_size
    x_np, y_np = training_data(row, data)
    n = len(y_np)
    steps = epochs * math.ceil(n / batch_size)
    make_optimizer = row.optimizer or adam
    stopping = (
        EarlyStopping(10, mode="max", monitor="eval_accuracy") if row.early_stopping else None
    )
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    x_val, y_val = jnp.asarray(data.x_val), jnp.asarray(data.y_val)
    members = row.ensemble_members

    def train_fn(hparams: Mapping[str, Any], key: jax.Array) -> dict[str, Any]:
        init_key, train_key, boot_key = jax.random.split(key, 3)
        weights = _member_weights(row, boot_key, n, x.dtype)

        def one(init, train, weight):
            params = functional(make(nnx.Rngs(params=init)))[1]
            result = fit(
                apply,
                params,
                lambda h: make_optimizer(h, steps),
                (x, y, weight),
                key=train,
                num_epochs=epochs,
                batch_size=batch_size,
                eval_data=(x_val, y_val),
                hparams=hparams,
                penalty=row.penalty,
                penalty_strength=1.0,  # each row's penalty carries its own named strength
                batch_transform=row.batch_transform,
                early_stopping=stopping,
            )
            final = result.params if row.final_params is None else row.final_params(result)
            return final, result.history

        params, history = jax.vmap(one)(
            jax.random.split(init_key, members), jax.random.split(train_key, members), weights
        )
        probs = jnp.mean(jax.vmap(lambda p: jax.nn.softmax(apply(p, x_val)))(params), axis=0)
        train_probs = jnp.mean(jax.vmap(lambda p: jax.nn.softmax(apply(p, x)))(params), axis=0)
        return {
            "params": params,
            "val_accuracy": jnp.mean(jnp.argmax(probs, -1) == y_val),
            "train_accuracy": jnp.mean(jnp.argmax(train_probs, -1) == y),
            "val_curve": history["eval_accuracy"][0],
            "train_curve": history["train_accuracy"][0],
        }

    return apply, train_fn


def _evidence(row: Row, trainer, data: StudyData, params, hparams) -> np.ndarray:
    """``row.evidence`` of every member (first ensemble member), one member at a time.

    Computed after the training sweep rather than inside it: XLA:CPU deadlocked (2 cores,
    jax 0.10) running a sweep chunk that held both the training loop and KFAC's batched
    eigendecompositions a second time.
    """
    apply = trainer[0]
    x, y = (jnp.asarray(a) for a in training_data(row, data))
    count = jax.tree.leaves(params)[0].shape[0] // row.ensemble_members
    firsts = jax.tree.map(lambda a: a[:: row.ensemble_members], params)
    values = {k: np.broadcast_to(np.asarray(v, np.float32), (count,)) for k, v in hparams.items()}

    @jax.jit
    def evidences(params, values):
        return jax.lax.map(lambda args: row.evidence(apply, args[0], x, y, args[1]),
                           (params, values))  # fmt: skip

    return np.asarray(evidences(firsts, values), np.float64)


def _sweep(
    row: Row, trainer, data: StudyData, config: StudyConfig, configs, *, key, seeds
) -> Trained:
    # Tuning and final sweeps get the same trainer (apply, train_fn) and chunks of
    # config.seeds members, so sweeps.run compiles each row once.
    apply, train_fn = trainer
    result = sweeps.run(
        train_fn,
        configs,
        key=key,
        seeds=seeds,
        chunk_size=config.seeds,
        progress=True,  # a bar over the sweep's chunks, with ETA, under the tour's row bar
        fixed=row.fixed,
        compiler_options=compiler_options(config),
    )
    metrics = result.metrics
    params = jax.tree.map(
        lambda a: a.reshape((-1, *a.shape[2:])), metrics["params"]
    )  # (configs·seeds·members, ...)
    configs = {k: np.asarray(v) for k, v in result.configs.items()}
    if row.evidence is None:
        score = np.asarray(metrics["val_accuracy"], np.float64)
    else:
        score = _evidence(row, trainer, data, params, {**row.fixed, **configs})
    failed = np.asarray(result.failed) | ~np.isfinite(score)
    return Trained(
        apply=apply,
        params=params,
        configs=configs,
        config_index=np.asarray(result.config_index),
        val_accuracy=_held_out_accuracy(row, metrics["val_accuracy"]),
        train_accuracy=np.asarray(metrics["train_accuracy"], np.float64),
        val_curve=np.asarray(metrics["val_curve"], np.float64),
        train_curve=np.asarray(metrics["train_curve"], np.float64),
        failed=failed,
        members_per_seed=row.ensemble_members,
        score=score,
    )


def _held_out_accuracy(row: Row, accuracy) -> np.ndarray:
    """Validation accuracy, or NaN for a row that trained on the validation split (its
    accuracy there is a training accuracy; NaN inside the sweep would flag divergence)."""
    accuracy = np.asarray(accuracy, np.float64)
    return accuracy if row.evidence is None else np.full_like(accuracy, np.nan)


def choose(trained: Trained) -> tuple[int, dict[str, float]]:
    """Index and values of the config with the best mean validation accuracy over seeds (or
    the best mean evidence, for a row that chooses by it); a config with a diverged member
    is never chosen.

    Example:
      >>> trained = Trained(
      ...     apply=None, params=None, configs={"dropout_rate": np.array([0.1, 0.1, 0.3, 0.3])},
      ...     config_index=np.array([0, 0, 1, 1]), val_accuracy=np.array([0.60, 0.62, 0.65, 0.66]),
      ...     train_accuracy=np.ones(4), val_curve=None, train_curve=None,
      ...     failed=np.array([False, False, False, False]), members_per_seed=1)
      >>> choose(trained)
      (1, {'dropout_rate': 0.3})
      >>> trained.failed[3] = True  # a diverged seed disqualifies its configuration
      >>> choose(trained)
      (0, {'dropout_rate': 0.1})
    """
    configs = np.unique(trained.config_index)
    selection = trained.selection_score()
    scores = []
    for c in configs:
        members = trained.config_index == c
        bad = trained.failed[members].any()
        scores.append(-np.inf if bad else float(np.mean(selection[members])))
    if not np.isfinite(max(scores)):
        raise FloatingPointError("every configuration of the sweep diverged")
    best = int(configs[int(np.argmax(scores))])
    index = int(np.flatnonzero(trained.config_index == best)[0])
    return best, {k: float(v[index]) for k, v in trained.configs.items()}


def run_row(
    row: Row, data: StudyData, config: StudyConfig, *, key: jax.Array, final_key: jax.Array
) -> dict[str, Any]:
    """Tune ``row`` on validation (one sweep over its grid) and train the choice on the
    shared final seeds (a second sweep). Reads no test data. A row with ``evidence``
    trains both sweeps on training + validation data and chooses by its evidence.

    Example:
      >>> from jaxreg.data import Dataset
      >>> rng = np.random.default_rng(0)  # a stand-in for MNIST-1D: 40 features, 10 classes
      >>> dataset = Dataset(rng.normal(size=(300, 40)).astype(np.float32), rng.integers(0, 10, 300),
      ...                   rng.normal(size=(50, 40)).astype(np.float32), rng.integers(0, 10, 50))
      >>> config = StudyConfig(seeds=2, tune_seeds=1, epochs=1, val_size=100, search_configs=2,
      ...                      search_seeds=1)
      >>> data = prepare_data(dataset, config)
      >>> from experiments.study.spec import Row
      >>> row = Row("dropout", "after each hidden layer", search={"dropout_rate": (0.1, 0.3)})
      >>> out = run_row(row, data, config, key=jax.random.key(0), final_key=jax.random.key(1))
      >>> sorted(out), sorted(out["chosen"]), out["final"].val_accuracy.shape  # 2 final seeds
      (['chosen', 'final', 'row', 'tuning'], ['dropout_rate'], (2,))
      >>> data.test.reads  # tuning and training read no test data
      0
    """
    tuning = None
    chosen: dict[str, float] = {}
    trainer = _train_fn(row, data, config)
    if row.search:
        grid = sweeps.grid(**{k: list(v) for k, v in row.search.items()})
        tuning = _sweep(row, trainer, data, config, grid, key=key, seeds=config.tune_seeds)
        _, chosen = choose(tuning)
    final = _train_choice(row, trainer, data, config, chosen, final_key=final_key)
    return {"row": row, "chosen": chosen, "tuning": tuning, "final": final}


def _train_choice(
    row: Row,
    trainer,
    data: StudyData,
    config: StudyConfig,
    chosen: Mapping[str, float],
    *,
    final_key,
) -> Trained:
    """``chosen`` on the shared final seeds; with nothing chosen, the row as specified (one
    config: its own fixed learning rate, else Adam's default)."""
    if not chosen:
        fixed = dict(row.fixed)
        chosen = {"learning_rate": fixed.pop("learning_rate", LEARNING_RATE)}
        row = replace(row, fixed=fixed)
    configs = {k: [v] for k, v in chosen.items()}
    return _sweep(row, trainer, data, config, configs, key=final_key, seeds=config.seeds)


def search(
    row: Row,
    data: StudyData,
    config: StudyConfig,
    *,
    key: jax.Array,
    final_key: jax.Array,
    anchors: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Random search over :func:`~experiments.study.spec.combination_space` (one compile,
    ``config.search_configs`` configs × ``search_seeds``), then the choice on the final seeds.

    ``anchors`` (strengths the single-regularizer rows chose on validation) add
    candidates to the random ones: each anchor alone (the others at 0) and all of
    them together, at the single rows' constant learning rate, plus all of them
    under a full cosine decay. The single rows' own settings are thus among the
    candidates, so the search can do worse on validation than a single row only by
    seed noise.

    Example:
      >>> from jaxreg.data import Dataset
      >>> rng = np.random.default_rng(0)  # a stand-in for MNIST-1D: 40 features, 10 classes
      >>> dataset = Dataset(rng.normal(size=(300, 40)).astype(np.float32), rng.integers(0, 10, 300),
      ...                   rng.normal(size=(50, 40)).astype(np.float32), rng.integers(0, 10, 50))
      >>> config = StudyConfig(seeds=2, tune_seeds=1, epochs=1, val_size=100, search_configs=2,
      ...                      search_seeds=1)
      >>> data = prepare_data(dataset, config)
      >>> from experiments.study.runner import combination_row
      >>> row = combination_row("combination", "searched strengths")
      >>> out = search(row, data, config, key=jax.random.key(0), final_key=jax.random.key(1),
      ...              anchors={"dropout_rate": 0.1})
      >>> len(out["tuning"].config_index)  # 2 random configs + 3 from the anchors, 1 seed each
      5
      >>> "dropout_rate" in out["chosen"], data.test.reads
      (True, 0)
    """
    space = combination_space()
    configs = sweeps.random(jax.random.fold_in(key, 1), config.search_configs, **space)
    if anchors:
        strengths = [name for name in space if name not in SINGLE_ROW_SCHEDULE]
        unknown = sorted(set(anchors) - set(strengths))
        if unknown:
            raise ValueError(f"anchors {unknown} are not combinable strengths {strengths}")
        together = {**{n: anchors.get(n, 0.0) for n in strengths}, **SINGLE_ROW_SCHEDULE}
        alone = [{**together, **{n: 0.0 for n in strengths if n != name}} for name in anchors]
        extra = [together, *alone, {**together, "lr_decay": 1.0}]
        configs = {
            name: np.concatenate([values, [candidate[name] for candidate in extra]])
            for name, values in configs.items()
        }
    trainer = _train_fn(row, data, config)
    tuning = _sweep(row, trainer, data, config, configs, key=key, seeds=config.search_seeds)
    _, chosen = choose(tuning)
    final = _train_choice(row, trainer, data, config, chosen, final_key=final_key)
    return {"row": row, "chosen": chosen, "tuning": tuning, "final": final}


def transfer(
    row: Row,
    chosen: Mapping[str, float],
    data: StudyData,
    config: StudyConfig,
    *,
    final_key: jax.Array,
    retune: Mapping[str, tuple[float, ...]] | None = None,
    key: jax.Array | None = None,
) -> dict[str, Any]:
    """Train ``row`` with strengths chosen elsewhere.

    ``retune`` (name → grid) re-chooses those values for ``row`` on validation (one
    sweep over the grid × ``tune_seeds``, keyed by ``key``); every other value is
    transferred as chosen. Without it nothing is tuned.

    Example:
      >>> from jaxreg.data import Dataset
      >>> rng = np.random.default_rng(0)  # a stand-in for MNIST-1D: 40 features, 10 classes
      >>> dataset = Dataset(rng.normal(size=(300, 40)).astype(np.float32), rng.integers(0, 10, 300),
      ...                   rng.normal(size=(50, 40)).astype(np.float32), rng.integers(0, 10, 50))
      >>> config = StudyConfig(seeds=2, tune_seeds=1, epochs=1, val_size=100, search_configs=2,
      ...                      search_seeds=1)
      >>> data = prepare_data(dataset, config)
      >>> from experiments.study.spec import Row
      >>> wide = Row("wide MLP", "40-512-512-512-10", model="wide_mlp")
      >>> out = transfer(wide, {"dropout_rate": 0.1}, data, config, final_key=jax.random.key(1))
      >>> out["chosen"], out["tuning"] is None  # transferred as chosen, nothing tuned
      ({'dropout_rate': 0.1}, True)
    """
    if not retune:
        fixed = replace(row, fixed={**row.fixed, **chosen})
        final = _train_choice(
            fixed, _train_fn(fixed, data, config), data, config, {}, final_key=final_key
        )
        return {"row": row, "chosen": dict(chosen), "tuning": None, "final": final}
    if key is None:
        raise ValueError("transfer with retune needs a key for its tuning sweep")
    kept = {name: value for name, value in chosen.items() if name not in retune}
    tuned = run_row(
        replace(row, fixed={**row.fixed, **kept}, search=dict(retune)),
        data,
        config,
        key=key,
        final_key=final_key,
    )
    values = {name: tuned["chosen"].get(name, value) for name, value in chosen.items()}
    return {
        "row": row,
        "chosen": {**values, **tuned["chosen"]},
        "tuning": tuned["tuning"],
        "final": tuned["final"],
    }


def combination_row(
    name: str, description: str, model: str = "mlp", key: str = "", reference: str = "baseline"
) -> Row:
    """A row stacking weight decay, dropout, augmentation, input noise and label smoothing
    under :func:`~experiments.study.spec.combined_optimizer`'s learning rate and cosine decay."""
    return Row(
        name,
        description,
        key=key,
        reference=reference,
        model=model,
        optimizer=combined_optimizer,
        batch_transform=combined_transform(),
    )
