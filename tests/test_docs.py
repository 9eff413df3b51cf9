"""The docs build's configuration: what CI builds with warnings as errors."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_builds_the_docs_with_warnings_as_errors_and_executed_tutorials():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "sphinx-build -W --keep-going" in ci
    conf = (ROOT / "docs" / "conf.py").read_text()
    assert 'nb_execution_mode = "force"' in conf and "nb_execution_raise_on_error = True" in conf
    index = (ROOT / "docs" / "index.md").read_text()
    for page in (
        "tutorials/overfitting",
        "tutorials/sweep",
        "tutorials/sharpness",
        "tutorials/ensembles",
        "api",
        "tour_report",
    ):
        assert page in index
    # The sharpness tutorial is the repository's notebook, not a copy that could drift.
    link = ROOT / "docs" / "tutorials" / "sharpness.ipynb"
    assert link.is_symlink() and link.resolve() == (ROOT / "notebooks" / "sharpness.ipynb")


def test_readme_links_the_docs_and_gives_the_build_command():
    readme = (ROOT / "README.md").read_text()
    assert "sphinx-build -W --keep-going -b html docs docs/_build/html" in readme
    assert "pip install -e '.[docs]'" in readme


def test_the_bring_your_own_model_examples_run_and_sweep_a_rate():
    """docs/howto/own_model.md: each framework's example builds a model whose rate is data."""
    import re

    import jax
    import jax.numpy as jnp

    text = (ROOT / "docs" / "howto" / "own_model.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    inputs = [(4, 8, 8, 1), (4, 40), (4, 40)]  # NNX CNN, Linen Net, Equinox Sequential
    assert len(blocks) == len(inputs)
    for block, shape in zip(blocks, inputs, strict=True):
        namespace: dict = {}
        exec(compile(block, "own_model.md", "exec"), namespace)
        model = namespace["model"]
        assert model.hparam_names == {"dropout_rate"}

        def forward(rate, model=model, shape=shape):
            x = jax.random.normal(jax.random.key(1), shape)  # not constant: BatchNorm
            return model.apply(model.params, model.state, x, key=jax.random.key(0),
                               train=True, hparams={"dropout_rate": rate})[0]  # fmt: skip

        outputs = jax.jit(jax.vmap(forward))(jnp.array([0.0, 0.5]))
        assert outputs.shape == (2, 4, 10)
        assert bool((outputs[0] != outputs[1]).any()), "the swept rate must reach the layers"


def test_the_stock_convolution_example_runs_and_swaps_the_convolution():
    """docs/howto/own_model.md's ``swap_stock_convs`` block builds the model it describes:
    the stock function, computed without a lax convolution, the stock module untouched."""
    import re

    import jax

    text = (ROOT / "docs" / "howto" / "own_model.md").read_text()
    (block,) = [b for b in re.findall(r"```py\n(.*?)```", text, re.S) if "swap_stock_convs" in b]
    namespace: dict = {}
    exec(compile(block, "own_model.md", "exec"), namespace)
    model, net = namespace["model"], namespace["net"]
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))

    def logits(x):
        return model.apply(model.params, model.state, x)[0]

    assert bool(jax.numpy.allclose(logits(x), net(x), atol=1e-5))
    assert "conv_general_dilated" not in str(jax.make_jaxpr(logits)(x))
    assert "conv_general_dilated" in str(jax.make_jaxpr(net)(x))
