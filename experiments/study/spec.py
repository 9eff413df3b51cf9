"""The study as data: each row is a model, an optimizer, a regularizer and a search space.

A :class:`Row` names the hyperparameters it tunes and the grid each is searched
over; everything that reads a hyperparameter gets it from ``hparams`` (traced),
so the runner trains the whole grid × seeds as one :func:`jaxreg.sweeps.run`
compile. Adding a row is a few lines here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import optax

from experiments.study import bayes
from experiments.study.models import model_apply
from jaxreg import averaging, jacobian, losses, masks, penalties, sweeps
from jaxreg import transforms as tx
from jaxreg.augment import signal
from jaxreg.calling import Takes, keywords_of, takes
from jaxreg.training import batch_transforms as bt

__all__ = [
    "LEARNING_RATE",
    "TUNED_BASELINE_RATES",
    "Row",
    "bayesian_rows",
    "combination_space",
    "default_rows",
    "extended_rows",
    "log_grid",
    "scaled_by",
]

#: Adam's learning rate in every MLP row that does not tune it.
#:
#: Example:
#:   >>> from experiments.study.spec import LEARNING_RATE
#:   >>> LEARNING_RATE
#:   0.001
LEARNING_RATE = 1e-3
Hparams = Mapping[str, Any]


def log_grid(low: float, high: float, num: int = 6) -> tuple[float, ...]:
    """``num`` log-spaced values from ``low`` to ``high`` (rounded to 3 significant digits).

    Example:
      >>> log_grid(1e-4, 1e-1, 4)
      (0.0001, 0.001, 0.01, 0.1)
    """
    import numpy as np

    return tuple(float(f"{v:.3g}") for v in np.geomspace(low, high, num))


@dataclass(frozen=True)
class Row:
    """One row of the study.

    Attributes:
      name: row label in the table (display text; may change freely).
      key: the row's stable identifier, by which scripts look it up (never the name).
      description: what the row changes, for the report.
      model: ``"mlp"`` (40-100-100-10), ``"wide_mlp"`` (40-512-512-512-10) or ``"cnn"``
        (CNN1D with 64 channels).
      search: hyperparameter name → grid searched on validation (traced values).
      fixed: hyperparameters held fixed (also handed to every component).
      optimizer: factory ``(hparams, total_steps) -> GradientTransformation``;
        default Adam 1e-3.
      penalty: ``params -> scalar`` added to the loss as it is (trained at
        ``penalty_strength=1``): it carries its own named strength, see :func:`scaled_by`.
      batch_transform: a ``jaxreg.training.batch_transforms`` transform.
      batch_size: minibatch size (default the study's).
      epoch_factor: epochs relative to the model's default (SAM: 2, since
        ``optax.contrib.sam`` alternates ascent and descent steps).
      early_stopping: stop on validation accuracy and restore the best epoch.
      ensemble_members: bootstrap members averaged per seed (bagging).
      combinable: may enter the combination search.
      note: caveat shown in the report (e.g. fewer descent steps).
      final_params: ``FitResult -> params`` the members are evaluated with (default the
        last iterate; weight averaging reads its average from the optimizer state).
      reference: key of the row its test accuracy is compared with (paired over seeds):
        the baseline, or the row that holds every knob but the one this row changes (the
        rows that tune the learning rate against the baseline that tunes it too).
      bootstrap: ensemble members train on bootstrap resamples (bagging); ``False``:
        on the same data, only their seeds differ (a deep ensemble).
      evidence: ``(apply, params, x, y, hparams) -> log marginal likelihood``: the row
        trains on training + validation data and chooses its strength by the mean
        evidence over tuning seeds instead of validation accuracy (no held-out data).
      predictive: ``(apply, params, x_train, y_train, x, *, key, hparams) -> probs``:
        how a member predicts on test (default its softmax), e.g. a Laplace predictive.
      derived_from: key of an earlier row whose trained members (and choice) this row
        reuses without training, to predict with its own ``predictive``.

    Example:
      >>> row = Row("input noise", "Gaussian input noise",
      ...           search={"noise_std": log_grid(0.05, 1.6, 6)},
      ...           batch_transform=bt.input_noise(), combinable=True)
      >>> row.model, row.search["noise_std"][:2], row.epoch_factor
      ('mlp', (0.05, 0.1), 1)
    """

    name: str
    description: str
    key: str = ""
    model: str = "mlp"
    search: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    fixed: Mapping[str, float] = field(default_factory=dict)
    optimizer: Callable[[Hparams, int], optax.GradientTransformation] | None = None
    penalty: Callable[[Any], Any] | None = None
    batch_transform: Callable | None = None
    batch_size: int | None = None
    epoch_factor: int = 1
    early_stopping: bool = False
    ensemble_members: int = 1
    combinable: bool = False
    note: str = ""
    final_params: Callable[[Any], Any] | None = None
    reference: str = "baseline"
    bootstrap: bool = True
    evidence: Callable[..., Any] | None = None
    predictive: Callable[..., Any] | None = None
    derived_from: str = ""


#: The tuned baseline's learning rates: the span of every row that tunes the rate.
#:
#: Example:
#:   >>> from experiments.study.spec import TUNED_BASELINE_RATES
#:   >>> TUNED_BASELINE_RATES[0], TUNED_BASELINE_RATES[-1], len(TUNED_BASELINE_RATES)
#:   (0.0001, 0.03, 6)
TUNED_BASELINE_RATES = log_grid(1e-4, 3e-2, 6)


def adam(hparams: Hparams, steps: int) -> optax.GradientTransformation:
    return optax.adam(hparams.get("learning_rate", LEARNING_RATE))


def _weight_decay(hparams: Hparams, steps: int) -> optax.GradientTransformation:
    return optax.chain(
        adam(hparams, steps),
        tx.decoupled_weight_decay(hparams["weight_decay"], mask=masks.weights_only),
    )


def _proximal_l1(hparams: Hparams, steps: int) -> optax.GradientTransformation:
    return optax.chain(
        adam(hparams, steps),
        tx.proximal_l1(hparams["l1_strength"], LEARNING_RATE, mask=masks.weights_only),
    )


def _elastic_net(hparams: Hparams, steps: int) -> optax.GradientTransformation:
    return optax.chain(
        adam(hparams, steps),
        tx.proximal_elastic_net(
            hparams["elastic_strength"], 0.5, LEARNING_RATE, mask=masks.weights_only
        ),
    )


def _sam(hparams: Hparams, steps: int) -> optax.GradientTransformation:
    adversary = optax.chain(optax.contrib.normalize(), optax.sgd(hparams["sam_rho"]))
    return optax.contrib.sam(adam(hparams, steps), adversary, sync_period=2)


def _max_norm(hparams: Hparams, steps: int) -> optax.GradientTransformation:
    return optax.chain(
        adam(hparams, steps), tx.max_norm(hparams["max_norm_radius"], mask=masks.weights_only)
    )


def _spectral_norm(hparams: Hparams, steps: int) -> optax.GradientTransformation:
    penalty = tx.spectral_norm_penalty(
        hparams["spectral_strength"], key=jax.random.key(0), mask=masks.weights_only
    )
    return optax.chain(penalty, adam(hparams, steps))


def _orthogonality(params):
    return penalties.orthogonality(params, mask=masks.weights_only)


def _swa(hparams: Hparams, steps: int) -> optax.GradientTransformation:
    # Izmailov et al.: a constant (here tuned) learning rate, iterates averaged over the
    # last quarter of training.
    return optax.chain(adam(hparams, steps), averaging.swa(start=(3 * steps) // 4))


def _ema(hparams: Hparams, steps: int) -> optax.GradientTransformation:
    return optax.chain(adam(hparams, steps), averaging.ema(hparams["ema_decay"]))


def _transforms_sam(hparams: Hparams, steps: int) -> optax.GradientTransformation:
    return tx.sam(adam(hparams, steps), hparams["sam_rho"])


def _mlp_apply():
    return model_apply("mlp")


@takes("batch")
def _input_gradient(params, *, batch):
    return jacobian.input_gradient_norm(
        _mlp_apply(), params, batch["x"], batch["y"], weight=batch["weight"]
    )


@takes("batch", "key", "hparams")
def _r_drop(params, *, batch, key, hparams):
    return losses.r_drop(
        _mlp_apply(), params, batch["x"], key=key, weight=batch["weight"], hparams=hparams
    )


def _averaged(result):
    return averaging.averaged_params(result.opt_state)


def _l2(params):
    return penalties.l2(params, mask=masks.weights_only)


def scaled_by(strength: str, penalty: Callable) -> Takes:
    """``penalty`` times its own strength ``hparams[strength]``: each regularizer of the
    study has a name of its own (``l2_strength``, ...), none shares ``penalty_strength``.

    The runner trains a row's penalty at ``penalty_strength=1.0`` (an exact product), so
    the objective is ``loss + hparams[strength] · penalty(params)``.

    Example:
      >>> l2 = scaled_by("l2_strength", lambda params: 0.5 * jnp.sum(params**2))
      >>> float(l2(jnp.ones(4), hparams={"l2_strength": 0.25}))
      0.5
      >>> sorted(keywords_of(l2))
      ['hparams']
    """
    inner = keywords_of(penalty)

    @takes(*(inner | {"hparams"}))
    def scaled(params, **keywords):
        passed = {k: v for k, v in keywords.items() if k in inner}
        return keywords["hparams"][strength] * penalty(params, **passed)

    return scaled


def _augment():
    return bt.augmentation(signal.mnist1d_pipeline)


def _mixup():
    return bt.mixup(10)


def combined_optimizer(hparams: Hparams, steps: int) -> optax.GradientTransformation:
    """Adam with decoupled weight decay under a cosine-shaped learning rate (combination rows).

    The rate starts at ``hparams["learning_rate"]`` (default :data:`LEARNING_RATE`)
    and falls along a half cosine by the fraction ``hparams["lr_decay"]`` (default
    1: to zero) over ``steps``; ``lr_decay`` 0 is the single rows' constant rate, so
    a search over it contains them.
    """
    peak = hparams.get("learning_rate", LEARNING_RATE)
    decay = hparams.get("lr_decay", 1.0)

    def schedule(count):
        progress = jnp.minimum(count / steps, 1.0)
        return peak * (1.0 - decay * 0.5 * (1.0 - jnp.cos(jnp.pi * progress)))

    return optax.chain(
        optax.adam(schedule),
        tx.decoupled_weight_decay(hparams["weight_decay"], mask=masks.weights_only),
    )


def combined_transform():
    """Augmentation, then input noise, then label smoothing, each at ``hparams`` strength."""
    return bt.chain(_augment(), bt.input_noise(), bt.label_smoothing(10))


def combination_space() -> dict[str, sweeps.Uniform | sweeps.LogUniform]:
    """Distributions of the random search over the combinable strengths and the schedule.

    Example:
      >>> sorted(combination_space())[:3]
      ['augment_strength', 'dropout_rate', 'label_smoothing']
    """
    return {
        "weight_decay": sweeps.LogUniform(1e-6, 1e-3),
        "dropout_rate": sweeps.LogUniform(0.02, 0.5),
        "augment_strength": sweeps.LogUniform(0.1, 2.0),
        "noise_std": sweeps.LogUniform(0.01, 0.5),
        "label_smoothing": sweeps.LogUniform(0.005, 0.2),
        "learning_rate": sweeps.LogUniform(5e-4, 5e-3),
        "lr_decay": sweeps.Uniform(0.0, 1.0),
    }


def default_rows() -> list[Row]:
    """The study: the overfitting baseline (and its tuned-rate twin), each regularizer tuned
    alone, parameter sharing, then the Bayesian rows (:func:`bayesian_rows`).

    Example:
      >>> rows = default_rows()
      >>> rows[0].name, rows[1].key, rows[-1].name
      ('baseline', 'tuned_baseline', 'deep ensemble')
      >>> all(len(values) >= 6 for row in rows for values in row.search.values())  # log grids
      True
    """
    return _penalty_rows() + _data_rows() + _training_rows() + bayesian_rows()


def _penalty_rows() -> list[Row]:
    """The baseline, then penalties and weight decay."""
    return [
        Row(
            "baseline",
            "MLP 40-100-100-10, Adam 1e-3, batch 100, no regularization",
            key="baseline",
        ),
        Row(
            "baseline (learning rate tuned)",
            "the baseline with Adam's learning rate tuned on validation: the reference of "
            "every row that tunes the learning rate",
            key="tuned_baseline",
            search={"learning_rate": TUNED_BASELINE_RATES},
            optimizer=adam,
        ),
        Row(
            "weight decay",
            "decoupled weight decay per step on weights",
            key="weight_decay",
            search={"weight_decay": log_grid(1e-5, 3e-3, 7)},
            optimizer=_weight_decay,
            combinable=True,
        ),
        Row(
            "L2 penalty",
            "0.5·Σw² on weights added to the loss",
            key="l2",
            search={"l2_strength": log_grid(1e-5, 1e-1, 7)},
            penalty=scaled_by("l2_strength", _l2),
        ),
        Row(
            "L1 (proximal)",
            "proximal L1 step on weights (exact zeros)",
            key="l1",
            search={"l1_strength": log_grid(1e-3, 3e-1, 6)},
            optimizer=_proximal_l1,
        ),
        Row(
            "elastic net (proximal)",
            "proximal elastic net on weights, l1_ratio 0.5",
            key="elastic_net",
            search={"elastic_strength": log_grid(1e-3, 3e-1, 6)},
            optimizer=_elastic_net,
        ),
    ]


def _data_rows() -> list[Row]:
    """Noise, augmentation, label smoothing and dropout."""
    return [
        Row(
            "input noise",
            "Gaussian input noise",
            key="input_noise",
            search={"noise_std": log_grid(0.05, 1.6, 6)},
            batch_transform=bt.input_noise(),
            combinable=True,
        ),
        Row(
            "1-D augmentation",
            "shift, scale, stretch and jitter at a tuned strength",
            key="augmentation",
            search={"augment_strength": log_grid(0.125, 2.0, 6)},
            batch_transform=_augment(),
            combinable=True,
        ),
        Row(
            "mixup",
            "mixup on inputs and labels",
            key="mixup",
            search={"mixup_alpha": log_grid(0.05, 1.6, 6)},
            batch_transform=_mixup(),
        ),
        Row(
            "label smoothing",
            "label smoothing ε (off-target convention)",
            key="label_smoothing",
            search={"label_smoothing": log_grid(0.01, 0.3, 6)},
            batch_transform=bt.label_smoothing(10),
            combinable=True,
        ),
        Row(
            "dropout",
            "dropout after every hidden layer",
            key="dropout",
            search={"dropout_rate": log_grid(0.05, 0.6, 6)},
            combinable=True,
        ),
    ]


def _training_rows() -> list[Row]:
    """Early stopping, bagging, batch size, SAM and parameter sharing."""
    return [
        Row(
            "early stopping",
            "stop when validation accuracy stalls (patience 10), restore the best epoch",
            key="early_stopping",
            early_stopping=True,
        ),
        Row(
            "bagged ensemble",
            "mean of 5 bootstrap-trained members",
            key="bagging",
            ensemble_members=5,
            note="5× the training compute",
        ),
        Row(
            "small batch (16)",
            "batch size 16, learning rate tuned",
            key="small_batch",
            reference="tuned_baseline",
            search={"learning_rate": log_grid(1e-4, 3e-3, 6)},
            optimizer=adam,
            batch_size=16,
        ),
        Row(
            "large batch (1000)",
            "batch size 1000, learning rate tuned",
            key="large_batch",
            reference="tuned_baseline",
            search={"learning_rate": log_grid(3e-4, 3e-2, 6)},
            optimizer=adam,
            batch_size=1000,
        ),
        Row(
            "SAM",
            "optax.contrib.sam (ascent/descent alternate), twice the epochs: descent steps match",
            key="sam",
            search={"sam_rho": log_grid(0.01, 0.5, 6)},
            optimizer=_sam,
            epoch_factor=2,
        ),
        Row(
            "CNN1D (parameter sharing)",
            "the MNIST-1D paper's CNN at 64 channels (it uses 25), Adam 1e-2 with a cosine "
            "schedule + 1-D augmentation at a tuned strength",
            key="cnn",
            model="cnn",
            search={"augment_strength": log_grid(0.25, 2.0, 6)},
            optimizer=lambda h, steps: optax.adam(optax.cosine_decay_schedule(1e-2, steps)),
            batch_transform=_augment(),
        ),
    ]


def bayesian_rows() -> list[Row]:
    """The Bayesian reading: L2's strength chosen by marginal likelihood on all training data,
    and three predictives compared on NLL and ECE (the Laplace one on the baseline's own
    networks, against MC dropout and a deep ensemble).

    Example:
      >>> [(row.key, row.reference) for row in bayesian_rows()]  # doctest: +NORMALIZE_WHITESPACE
      [('evidence_l2', 'l2'), ('laplace', 'baseline'), ('mc_dropout', 'dropout'),
       ('deep_ensemble', 'baseline')]
    """
    return [
        Row(
            "L2 by marginal likelihood",
            "the L2 row's penalty and grid, trained on training + validation data; the "
            "strength with the highest KFAC Laplace evidence is chosen (no held-out data)",
            key="evidence_l2",
            reference="l2",
            search={"l2_strength": log_grid(1e-5, 1e-1, 7)},
            penalty=scaled_by("l2_strength", _l2),
            evidence=bayes.l2_evidence,
        ),
        Row(
            "last-layer Laplace (baseline)",
            "the baseline's networks predicting through a last-layer Laplace (GLM, probit; "
            "prior precision by MacKay's update on the training data)",
            key="laplace",
            predictive=bayes.last_layer_laplace,
            derived_from="baseline",
        ),
        Row(
            "MC dropout",
            f"the dropout row's networks, mean of {bayes.MC_SAMPLES} passes with dropout on",
            key="mc_dropout",
            reference="dropout",
            predictive=bayes.mc_dropout,
            derived_from="dropout",
        ),
        Row(
            "deep ensemble",
            "mean of 5 baseline MLPs trained on the same data from different seeds",
            key="deep_ensemble",
            ensemble_members=5,
            bootstrap=False,
            note="5× the training compute",
        ),
    ]


def extended_rows() -> list[Row]:
    """Rows for the regularizers of the last decade, each tuned like :func:`default_rows`'
    (``python -m experiments.tour --extended`` appends them to the study). The
    input-gradient and R-Drop penalties see the minibatch (and R-Drop its own dropout key)
    through the training loop's ``penalty(params, *, batch, key, hparams)`` keywords.

    Example:
      >>> [row.name for row in extended_rows()][:3]
      ['max-norm', 'spectral-norm penalty', 'orthogonality penalty']
      >>> all(len(values) >= 6 for row in extended_rows() for values in row.search.values())
      True
    """
    return [
        Row(
            "max-norm",
            "each unit's incoming weights projected onto a ball after every step",
            key="max_norm",
            search={"max_norm_radius": log_grid(0.5, 8.0, 6)},
            optimizer=_max_norm,
        ),
        Row(
            "spectral-norm penalty",
            "strength·½σ(W)² per kernel, σ by power iteration carried in the optimizer state",
            key="spectral_norm",
            search={"spectral_strength": log_grid(1e-4, 1e-1, 6)},
            optimizer=_spectral_norm,
        ),
        Row(
            "orthogonality penalty",
            "soft orthogonality Σ‖WᵀW − I‖²_F on the kernels, added to the loss",
            key="orthogonality",
            search={"orthogonality_strength": log_grid(1e-5, 1e-1, 7)},
            penalty=scaled_by("orthogonality_strength", _orthogonality),
        ),
        Row(
            "SWA",
            "average of the iterates over the last quarter of training, learning rate tuned",
            key="swa",
            reference="tuned_baseline",
            search={"learning_rate": log_grid(1e-3, 3e-2, 6)},
            optimizer=_swa,
            final_params=_averaged,
        ),
        Row(
            "EMA of weights",
            "exponential moving average of the weights (debiased), decay tuned",
            key="ema",
            search={"ema_decay": (0.9, 0.97, 0.99, 0.997, 0.999, 0.9997)},
            optimizer=_ema,
            final_params=_averaged,
        ),
        Row(
            "input-gradient penalty",
            "double backpropagation: strength·mean ‖∂ℓ/∂x‖² added to the loss",
            key="input_gradient",
            search={"input_gradient_strength": log_grid(1e-3, 3.0, 7)},
            penalty=scaled_by("input_gradient_strength", _input_gradient),
        ),
        Row(
            "R-Drop",
            "dropout 0.1 and strength·symmetric KL between two dropout passes (Liang et al.)",
            key="r_drop",
            search={"r_drop_strength": log_grid(0.03, 3.0, 6)},
            fixed={"dropout_rate": 0.1},
            penalty=scaled_by("r_drop_strength", _r_drop),
        ),
        Row(
            "SAM (one descent step per minibatch)",
            "transforms.sam: the gradient at the ascent point, one descent step per minibatch",
            key="sam_transform",
            search={"sam_rho": log_grid(0.03, 3.0, 6)},
            optimizer=_transforms_sam,
        ),
    ]
