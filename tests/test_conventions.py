"""The conventions of docs/conventions.md that a machine can check."""

import importlib
import inspect
import pkgutil

import jaxreg

# Modules whose functions exist to produce randomness: key first and positional.
RANDOMNESS_MODULES = ("jaxreg.noise", "jaxreg.labels", "jaxreg.augment")
RANDOMNESS_FUNCTIONS = {
    "jaxreg.ensembles.bootstrap_weights",
    "jaxreg.ensembles.subspace_masks",
    "jaxreg.sweeps.spaces.random",
    "jaxreg.data.train_val_split",
    "jaxreg.data.shuffled_batches",
    "jaxreg.landscape.random_direction",
    "jaxreg.nn.stock.stock_dropout",
}


def _public_functions_with_a_key():
    for info in pkgutil.walk_packages(jaxreg.__path__, "jaxreg."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue  # private helpers
        module = importlib.import_module(info.name)
        for name, fn in vars(module).items():
            if name.startswith("_") or not inspect.isfunction(fn):
                continue
            if fn.__module__ != info.name or "key" not in inspect.signature(fn).parameters:
                continue
            yield f"{info.name}.{name}", inspect.signature(fn)


def test_key_is_first_for_randomness_and_keyword_only_elsewhere():
    checked, wrong = 0, []
    for qualified, signature in _public_functions_with_a_key():
        key = signature.parameters["key"]
        first = next(iter(signature.parameters)) == "key"
        is_randomness = qualified in RANDOMNESS_FUNCTIONS or qualified.startswith(
            RANDOMNESS_MODULES
        )
        if is_randomness:
            ok = first and key.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        else:
            ok = key.kind is inspect.Parameter.KEYWORD_ONLY
        if not ok:
            wrong.append(qualified)
        checked += 1
    assert not wrong, wrong
    assert checked > 40  # the walk found the package's functions
