"""The shape of the project: public JAX only, no private cross-module imports, the research
scripts on jaxreg's public API, no import cycles. Read from the source, so a new file is
checked as soon as it exists."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("jaxreg", "experiments", "benchmarks", "tests")


def _python_files(*folders: str) -> list[Path]:
    return sorted(f for folder in folders for f in (ROOT / folder).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path):
    """``(imported module, imported name or None, line)`` for each import in ``path``,
    including imports inside functions."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                yield node.module, alias.name, node.lineno


def _private(dotted: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in dotted.split("."))


def test_nothing_imports_private_jax():
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in _python_files(*SOURCES)
        for module, name, line in _imports(path)
        if module.startswith("jax._src") or (module == "jax" and name == "_src")
    ]
    found += [
        f"{path.relative_to(ROOT)}"
        for path in _python_files("jaxreg", "experiments")
        if "jax._src" in path.read_text()
    ]
    assert not found, found


def test_no_module_imports_another_modules_private_name():
    """Inside jaxreg, a private module (``_checks``) may be shared; a private *name* of
    another module (``data._check_batch_size``) may not."""
    found = []
    for path in _python_files("jaxreg"):
        for module, name, line in _imports(path):
            if module.startswith("jaxreg") and name and _private(name):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}.{name}")
    assert not found, found


def test_experiments_use_only_the_public_api():
    """The research scripts are what a researcher copies: public names only."""
    found = []
    for path in _python_files("experiments"):
        for module, name, line in _imports(path):
            if not module.startswith("jaxreg"):
                continue
            if _private(module) or (name is not None and _private(name)):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}.{name}")
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and _private(node.attr)
                and isinstance(node.value, ast.Name)
                and node.value.id in {"jaxreg", "data", "sweeps", "fit", "nn", "plots"}
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} reads .{node.attr}")
    assert not found, found


def test_the_library_does_not_import_the_research_scripts():
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in _python_files("jaxreg")
        for module, _, line in _imports(path)
        if module.split(".")[0] == "experiments"
    ]
    assert not found, found


@pytest.mark.parametrize("package", ["jaxreg", "experiments"])
def test_no_import_cycles(package):
    """Two modules never import each other, not even lazily inside a function."""
    modules = {_module_name(p): p for p in _python_files(package)}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for module, imported, _ in _imports(path):
            for candidate in (f"{module}.{imported}", module):
                if candidate in modules and candidate != name:
                    targets.add(candidate)
                    break
        # A package's __init__ importing its own submodules is how it re-exports them.
        graph[name] = {t for t in targets if not name or not t.startswith(name + ".")}
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                raise AssertionError(" -> ".join([*trail, node, target]))
            if target not in state:
                visit(target, [*trail, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_the_checks_catch_what_they_look_for(tmp_path):
    """The scanners themselves: a planted private import is found."""
    planted = tmp_path / "planted.py"
    planted.write_text("from jax._src import core\nfrom jaxreg.data import _secret\n")
    imports = list(_imports(planted))
    assert ("jax._src", "core", 1) in imports
    assert _private("_secret") and not _private("__init__") and _private("jaxreg._checks")


def _trains(node: ast.AST) -> bool:
    """Whether ``node`` calls ``fit`` or a solver (``proximal_gradient``) anywhere inside."""
    for call in ast.walk(node):
        if isinstance(call, ast.Call):
            name = getattr(call.func, "id", None) or getattr(call.func, "attr", None)
            if name in {"fit", "proximal_gradient"}:
                return True
    return False


def _hand_vmapped_training(path: Path) -> list[int]:
    """``jax.vmap`` over a function that trains, outside a sweep member (a ``train_fn`` given
    to ``sweeps.run`` may vmap the bootstrap members of its one configuration)."""
    tree = ast.parse(path.read_text())
    training = {
        node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and _trains(node)
    }
    inside_members = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name == "train_fn"
        for inner in ast.walk(node)
    }
    found = []
    for node in ast.walk(tree):
        is_vmap = (
            isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "vmap" and node.args
        )
        if not is_vmap or id(node) in inside_members:
            continue
        target = node.args[0]
        if (isinstance(target, ast.Name) and target.id in training) or (
            isinstance(target, ast.Lambda) and _trains(target)
        ):
            found.append(node.lineno)
    return found


def test_experiments_train_many_configurations_only_through_sweeps_run(tmp_path):
    """One sweep driver: no research script vmaps a training run by hand."""
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in _python_files("experiments")
        for line in _hand_vmapped_training(path)
    ]
    assert not found, found
    planted = tmp_path / "planted.py"
    planted.write_text("def run(p):\n    return fit(p)\n\nout = jax.jit(jax.vmap(run))(ps)\n")
    assert _hand_vmapped_training(planted) == [4]


def _body_lines(node: ast.FunctionDef) -> int:
    """Lines of a function after its docstring (the docstring's example is documentation)."""
    first = node.body[0]
    has_doc = isinstance(first, ast.Expr) and isinstance(
        getattr(first, "value", None), ast.Constant
    )
    start = first.end_lineno + 1 if has_doc and len(node.body) > 1 else first.lineno
    return node.end_lineno - start + 1


def test_no_function_is_longer_than_80_lines():
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({_body_lines(node)} lines)"
        for path in _python_files("jaxreg", "experiments")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _body_lines(node) > 80
    ]
    assert not long, long


def _test_split_reads(source: str) -> list[str]:
    """Why ``source`` (an experiment script) may read test data outside the lock, if it may."""
    import re

    # A line that builds a lock (HeldOut, or the study's prepare_data) may touch the raw split.
    code = "\n".join(
        line
        for line in source.splitlines()
        if "HeldOut(" not in line and "prepare_data(" not in line
    )
    problems = [f"reads .{m} directly" for m in re.findall(r"\.([xy]_test)\b", code)]
    if "mnist1d()" in code:
        problems.append("loads MNIST-1D itself instead of through common.mnist1d_data")
    unlock, read = code.find(".test.unlock()"), code.find(".test.read()")
    if "mnist1d_data(" in code and (unlock < 0 or (read >= 0 and read < unlock)):
        problems.append("does not unlock the test split before reading it")
    return problems


def test_experiments_read_test_only_through_the_lock():
    """Every experiment gets MNIST-1D from ``common.mnist1d_data`` (test is a ``HeldOut``)
    and reads it only after unlocking it; tests/test_experiments runs each script, so
    a read before the unlock raises there."""
    # The gallery (a showcase, no claim) builds its own HeldOut per task in task_data.
    skip = {"common.py", "gallery.py"}
    scripts = [p for p in (ROOT / "experiments").glob("*.py") if p.name not in skip]
    found = {p.name: _test_split_reads(p.read_text()) for p in scripts}
    assert not {name: why for name, why in found.items() if why}
    users = [p.name for p in scripts if "mnist1d_data(" in p.read_text()]
    assert len(users) >= 10, users
    bad = "data = jaxreg.data.mnist1d()\nx = data.x_test\nsplit.test.read()\nsplit.test.unlock()"
    assert len(_test_split_reads(bad + "\nmnist1d_data(validation=False)")) == 3
    assert _test_split_reads("mnist1d_data(validation=True)\nfit(...)") != []  # never unlocked
