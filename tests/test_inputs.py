"""Bad inputs get a clear error naming the user's argument, where the value enters (issue 35)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxreg
from jaxreg import sharpness
from jaxreg.data import batches


def _linear_problem():
    x = jax.random.normal(jax.random.key(0), (32, 3))
    y = (x[:, 0] > 0).astype(jnp.int32)

    def apply(params, x, **_):
        return x @ params["w"]

    return apply, {"w": jnp.zeros((3, 2))}, x, y


def _loss_fn(params, batch):
    logits = batch["x"] @ params["w"]
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])
    return jnp.sum(batch["weight"] * losses) / jnp.sum(batch["weight"])


def _entry_points(key):
    apply, params, x, y = _linear_problem()
    data = batches(x, y, 16)
    return {
        "fit": lambda: jaxreg.fit(
            apply, params, optax.sgd(0.1), (x, y), key=key, num_epochs=1, batch_size=16
        ),
        "sweeps.run": lambda: jaxreg.sweeps.run(
            lambda config, k: config["lr"] * jax.random.normal(k), {"lr": [0.1]}, key=key
        ),
        "top_eigenvalues": lambda: sharpness.top_eigenvalues(_loss_fn, params, data, key=key),
        "hessian_trace": lambda: sharpness.hessian_trace(_loss_fn, params, data, key=key),
        "spectral_density": lambda: sharpness.spectral_density(_loss_fn, params, data, key=key),
    }


@pytest.mark.parametrize("entry", list(_entry_points(None)))
@pytest.mark.parametrize("key", [0, None, np.zeros(3, np.int32)], ids=["int", "None", "int32"])
def test_every_entry_point_names_a_key_that_is_not_a_prng_key(entry, key):
    with pytest.raises(TypeError, match=r"^key must be a JAX PRNG key such as jax\.random"):
        _entry_points(key)[entry]()


def test_legacy_and_batched_keys_are_accepted():
    from jaxreg._checks import check_key

    check_key(jax.random.PRNGKey(0))
    check_key(jax.random.split(jax.random.key(0), 4))
    jax.vmap(check_key)(jax.random.split(jax.random.key(0), 4))


def test_curvature_names_data_that_is_not_batched():
    apply, params, x, y = _linear_problem()
    key = jax.random.key(0)
    with pytest.raises(TypeError, match=r"^data must be batches from jaxreg\.data\.batches"):
        sharpness.top_eigenvalues(_loss_fn, params, (x, y), key=key)
    unbatched = {"x": x, "y": y, "weight": jnp.ones(32)}
    with pytest.raises(ValueError, match=r"^data has no batch-index axis: its 'weight' has shape"):
        sharpness.top_eigenvalues(_loss_fn, params, unbatched, key=key)
    with pytest.raises(TypeError, match=r"^data must be batches"):
        sharpness.gauss_newton_vp(apply, params, [x, y])


def _nnx_mlp():
    from flax import nnx

    return jaxreg.nn.from_nnx(jaxreg.nn.MLP((3, 8, 2), dropout_rate=0.1, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize(
    "hparams, unread",
    [({"dropout_rat": 0.5}, "dropout_rat"), ({"learning_rate": 10.0}, "learning_rate")],
)
def test_fit_refuses_hparams_that_nothing_reads_and_lists_what_it_reads(hparams, unread):
    _, _, x, y = _linear_problem()
    model = _nnx_mlp()
    with pytest.raises(ValueError, match=rf"^hparams \['{unread}'\] are read by nothing") as info:
        jaxreg.fit(model, model.params, optax.adam(1e-3), (x, y), key=jax.random.key(0),
                   num_epochs=1, batch_size=16, hparams=hparams)  # fmt: skip
    assert "'dropout_rate'" in str(info.value)  # the names this run does read


def test_fit_checks_hparams_with_one_trace_per_setup_and_still_refuses_on_repeat():
    _, _, x, y = _linear_problem()
    model = _nnx_mlp()
    factory_calls = []

    def sgd(h):
        factory_calls.append(1)
        return optax.sgd(h["learning_rate"])

    def train(hparams):
        host = jaxreg.HostOptions(steps="host")
        return jaxreg.fit(model, model.params, sgd, (x, y), key=jax.random.key(0), num_epochs=1,
                          batch_size=16, hparams=hparams, host=host)  # fmt: skip

    train({"learning_rate": 0.1, "dropout_rate": 0.2})
    first = len(factory_calls)
    train({"learning_rate": 0.1, "dropout_rate": 0.2})
    # Only init's eager call: neither the check nor the cached step programs trace again.
    assert len(factory_calls) - first == 1 < first
    for _ in range(2):  # a cached read set refuses the same way
        with pytest.raises(ValueError, match=r"^hparams \['dropout_rat'\] are read by nothing"):
            train({"learning_rate": 0.1, "dropout_rat": 0.2})


def test_fit_accepts_hparams_its_optimizer_factory_and_model_read():
    _, _, x, y = _linear_problem()
    model = _nnx_mlp()
    result = jaxreg.fit(
        model, model.params, lambda h: optax.sgd(h["learning_rate"]), (x, y),
        key=jax.random.key(0), num_epochs=1, batch_size=16,
        hparams={"learning_rate": 0.1, "dropout_rate": 0.2},
    )  # fmt: skip
    assert np.isfinite(float(result.history["train_loss"][-1]))


@pytest.mark.parametrize(
    "name, value, problem",
    [
        ("dropout_rate", 2.0, r"dropout_rate=2 is outside \[0, 1\)"),
        ("dropout_rate", float("nan"), "dropout_rate=nan is not finite"),
        ("learning_rate", -1e-3, "learning_rate=-0.001 is negative"),
        ("penalty_strength", -1.0, "penalty_strength=-1 is negative"),
        ("weight_decay", -0.1, "weight_decay=-0.1 is negative"),
    ],
)
def test_fit_names_an_invalid_hparam_value(name, value, problem):
    _, _, x, y = _linear_problem()
    model = _nnx_mlp()
    with pytest.raises(ValueError, match=rf"^hparams\['{name}'\] is invalid: {problem}"):
        jaxreg.fit(
            model, model.params, lambda h: optax.sgd(h.get("learning_rate", 0.1)), (x, y),
            key=jax.random.key(0), num_epochs=1, batch_size=16, hparams={name: value},
        )  # fmt: skip


def test_a_sweep_flags_members_with_invalid_values_and_says_why():
    def train_fn(config, key):
        return {"loss": config["dropout_rate"] + 0.0 * jax.random.normal(key)}

    rates = [0.1, 2.0, -0.5, float("nan")]
    with pytest.warns(UserWarning, match="3 of 4 members ran with invalid config values"):
        result = jaxreg.sweeps.run(train_fn, {"dropout_rate": rates}, key=jax.random.key(0),
                                   progress=False)  # fmt: skip
    assert result.failed.tolist() == [False, True, True, True]
    assert result.failure.tolist() == [
        "",
        "dropout_rate=2 is outside [0, 1)",
        "dropout_rate=-0.5 is outside [0, 1)",
        "dropout_rate=nan is not finite",
    ]


def test_a_diverged_member_is_flagged_as_non_finite_and_the_others_are_not():
    def train_fn(config, key):
        return {"loss": jnp.log(config["scale"]) + 0.0 * jax.random.normal(key)}

    result = jaxreg.sweeps.run(train_fn, {"scale": [1.0, -1.0]}, key=jax.random.key(0),
                               progress=False)  # fmt: skip
    assert result.failure.tolist() == ["", "non-finite metric"]


def test_an_equinox_batchnorm_model_survives_an_eager_call_and_applies_purely():
    import equinox as eqx

    class Net(eqx.Module):
        linear: eqx.nn.Linear
        norm: eqx.nn.BatchNorm

        def __init__(self, key):
            self.linear = eqx.nn.Linear(3, 2, key=key)
            self.norm = eqx.nn.BatchNorm(2, axis_name="batch", mode="batch")

        def __call__(self, x, state, *, key=None):
            return self.norm(self.linear(x), state)

    net, state = eqx.nn.make_with_state(Net)(jax.random.key(0))
    model = jaxreg.nn.from_equinox(net, state)
    _, _, x, y = _linear_problem()
    first = model.apply(model.params, model.state, x, key=jax.random.key(1), train=True)
    again = model.apply(model.params, model.state, x, key=jax.random.key(1), train=True)
    chex.assert_trees_all_equal(first, again)  # same inputs, same outputs and new state
    result = jaxreg.fit(model, model.params, optax.adam(1e-2), (x, y), key=jax.random.key(0),
                        num_epochs=2, batch_size=16)  # fmt: skip
    assert np.isfinite(float(result.history["train_loss"][-1]))


def test_labels_outside_the_classes_are_named_by_metrics_and_losses():
    from jaxreg import losses, metrics

    probs = jnp.array([[0.5, 0.3, 0.2], [0.2, 0.5, 0.3]])
    message = r"^labels must lie in \[0, 3\) for 3 classes; got values from 0 to 7"
    with pytest.raises(ValueError, match=message):
        metrics.accuracy(probs, jnp.array([0, 7]))
    apply = lambda params, x, **_: x @ params  # noqa: E731
    loss_fn = losses.classification_loss(apply)
    batch = {"x": jnp.eye(3)[:2], "y": jnp.array([0, 12])}
    with pytest.raises(ValueError, match=r"^labels must lie in \[0, 3\)"):
        loss_fn(jnp.zeros((3, 3)), batch)


def test_masks_and_early_stopping_name_their_bad_arguments():
    from jaxreg import masks

    with pytest.raises(ValueError, match=r"^by_path pattern '\[' is not a valid regular expr"):
        masks.by_path("[")
    apply, params, x, y = _linear_problem()
    with pytest.raises(ValueError, match=r"^patience must be non-negative"):
        jaxreg.fit(apply, params, optax.sgd(0.1), (x, y), key=jax.random.key(0), num_epochs=1,
                   batch_size=16, eval_data=(x, y),
                   early_stopping=jaxreg.training.EarlyStopping(patience=-1))  # fmt: skip


def test_fit_names_the_bridge_for_a_raw_framework_module():
    import equinox as eqx
    from flax import linen, nnx

    _, _, x, y = _linear_problem()
    modules = {
        "from_nnx": nnx.Linear(3, 2, rngs=nnx.Rngs(0)),
        "from_linen": linen.Dense(2),
        "from_equinox": eqx.nn.Linear(3, 2, key=jax.random.key(0)),
    }
    for bridge, module in modules.items():
        with pytest.raises(
            TypeError, match=rf"^model is a .* module .*wrap it with jaxreg\.nn\.{bridge}"
        ):
            jaxreg.fit(module, {}, optax.sgd(0.1), (x, y), key=jax.random.key(0), num_epochs=1,
                       batch_size=16)  # fmt: skip


def test_fit_names_params_of_another_model_and_inputs_of_the_wrong_width():
    from flax import nnx

    _, _, x, y = _linear_problem()
    small = jaxreg.nn.from_nnx(jaxreg.nn.MLP((3, 4, 2), rngs=nnx.Rngs(0)))
    other = jaxreg.nn.from_nnx(jaxreg.nn.MLP((3, 8, 2), rngs=nnx.Rngs(0)))
    fit_kwargs = {"key": jax.random.key(0), "num_epochs": 1, "batch_size": 16}
    with pytest.raises(ValueError, match=r"has shape \(8,\), but the model's has \(4,\): these"):
        jaxreg.fit(small, other.params, optax.sgd(0.1), (x, y), **fit_kwargs)
    with pytest.raises(ValueError, match=r"^the model cannot take the train inputs \(examples of "):
        jaxreg.fit(small, small.params, optax.sgd(0.1), (x[:, :2], y), **fit_kwargs)
    with pytest.raises(ValueError, match=r"^the model cannot take the eval_data inputs"):
        jaxreg.fit(small, small.params, optax.sgd(0.1), (x, y), eval_data=(x[:, :2], y),
                   **fit_kwargs)  # fmt: skip
