"""tools/mutation.py's sampling and interval (the mutation runs themselves are not in the suite)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

_SPEC = importlib.util.spec_from_file_location(
    "mutation", Path(__file__).resolve().parent.parent / "tools" / "mutation.py"
)
mutation = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(mutation)


@pytest.mark.parametrize(("killed", "total"), [(90, 100), (0, 7), (412, 440), (5, 5)])
def test_wilson_interval_matches_scipy(killed, total):
    expected = stats.binomtest(killed, total).proportion_ci(method="wilson")
    np.testing.assert_allclose(
        mutation.wilson_interval(killed, total), (expected.low, expected.high), atol=1e-4
    )


def test_a_sample_selects_each_mutant_number_with_the_given_probability():
    patterns = mutation.sample_patterns(0.2, seed=3, largest=20000)
    numbers = [int(p.removeprefix("*__mutmut_")) for p in patterns]
    assert all(p.startswith("*__mutmut_") for p in patterns)
    assert min(numbers) >= 1 and max(numbers) <= 20000 and len(set(numbers)) == len(numbers)
    assert abs(len(numbers) / 20000 - 0.2) < 4 * np.sqrt(0.16 / 20000)
    assert mutation.sample_patterns(0.2, seed=3, largest=20000) == patterns
    assert mutation.sample_patterns(0.2, seed=4, largest=20000) != patterns


def test_a_test_module_that_runs_jax_at_import_is_refused(tmp_path):
    """mutmut forks after collecting: JAX started at import would deadlock every mutant."""
    (tmp_path / "test_numpy_data.py").write_text(
        "import numpy as np\nX = np.ones(3)\n\ndef test_x():\n    assert X.sum() == 3\n"
    )
    (tmp_path / "test_jax_data.py").write_text(
        "import jax\nKEY = jax.random.key(0)\n\ndef test_key():\n    assert KEY is not None\n"
    )
    mutation.check_collection_leaves_jax_idle(tmp_path, ["test_numpy_data.py"])
    with pytest.raises(RuntimeError, match="collecting the tests ran JAX"):
        mutation.check_collection_leaves_jax_idle(tmp_path, ["test_jax_data.py"])


def test_recorded_sampled_scores_carry_their_wilson_interval():
    root = Path(__file__).resolve().parent.parent / "tools"
    for name in ("mutation_scores.json", "mutation_scores_before.json"):
        for group, result in json.loads((root / name).read_text()).items():
            if isinstance(result, dict) and "sample" in result:
                interval = mutation.wilson_interval(result["killed"], result["mutants"])
                assert tuple(result["interval"]) == interval, (name, group)
                assert interval[0] <= result["score"] <= interval[1]
