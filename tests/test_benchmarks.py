"""The benchmark protocol (benchmarks/README.md) and the README's performance numbers.

Every performance number in the README's generated paragraphs comes from a recorded
result in ``benchmarks/results``; the recorded results follow the protocol (separate
processes, at least five random starts, the host's speed, equal thread counts); and the
ratios the README quotes are recomputed here from the per-start times.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest

from benchmarks import _protocol, readme
from benchmarks.hessian import ratios

ROOT = Path(__file__).resolve().parents[1]
HESSIAN = json.loads((ROOT / "benchmarks" / "results" / "hessian.json").read_text())
README = (ROOT / "README.md").read_text()


def _block(name: str) -> str:
    found = re.search(
        rf"<!-- benchmarks:{name} -->\n(.*?)\n<!-- /benchmarks:{name} -->", README, re.S
    )
    assert found, f"README has no generated {name} block"
    return found.group(1)


@pytest.mark.parametrize("name", ["hessian", "tour", "kfac_conv"])
def test_the_readmes_performance_paragraphs_are_generated_from_the_recorded_results(name):
    assert _block(name) == readme.blocks()[name]


def test_the_compilation_cache_row_quotes_the_recorded_first_calls():
    cache = HESSIAN["mlp"]["compilation_cache"]
    phrase = readme.cache_phrase(HESSIAN)
    assert phrase in " ".join(README.split())
    assert f"{cache['warm_first_call_s']:.1f} s with a warm cache" in phrase
    assert cache["warm_first_call_s"] < cache["cold_first_call_s"]


def test_the_compilation_cache_docstring_quotes_the_recorded_first_calls():
    from jaxreg import compilation

    text = " ".join(compilation.enable_compilation_cache.__doc__.split())
    for workload in ("mlp", "resnet"):
        cache = HESSIAN[workload]["compilation_cache"]
        quoted = f"{cache['warm_first_call_s']:.1f} s with a warm cache against "
        quoted += f"{cache['cold_first_call_s']:.1f} s cold"
        if workload == "resnet":
            quoted = (
                f"{cache['warm_first_call_s']:.1f} s against {cache['cold_first_call_s']:.1f} s"
            )
        assert quoted in text


def test_the_recorded_conv_kfac_factors_agree_with_curvlinops_on_every_layer():
    result = json.loads((ROOT / "benchmarks" / "results" / "kfac_conv.json").read_text())
    rows = result["agreement"]
    assert {name.split("/")[0] for name in rows} == {"expand", "reduce"}
    assert len(rows) == 8  # two convolutions and two dense layers, each approximation
    worst = max(max(row.values()) for row in rows.values())
    assert worst == result["worst_relative"] < 1e-8
    assert result["port_logits_relative"] < 1e-12  # the PyTorch port is the same network


def test_the_conv_in_a_loop_slowdown_is_the_recorded_one():
    phrase = readme.conv_phrase(HESSIAN)
    assert phrase in " ".join(README.split())
    conv = HESSIAN["conv_in_loop"]
    assert conv["patch_conv_in_loop_s"] < conv["lax_in_loop_s"] / 5  # why patch_conv exists


def test_no_performance_ratio_in_the_readme_is_written_by_hand():
    """Outside the generated blocks and phrases (and the Laplace sentence, checked in
    test_project), the README states no speed-up: a hand-edited ``N×`` would escape the
    recorded results."""
    text = re.sub(r"<!-- benchmarks:(\w+) -->.*?<!-- /benchmarks:\1 -->", "", README, flags=re.S)
    text = re.sub(r"Evidence-tuning a grid.*?laplace\.json`\)\.", "", text, flags=re.S)
    text = " ".join(text.split()).replace(readme.conv_phrase(HESSIAN), "")
    assert not re.findall(r"\d×(?!\d)|\d(\.\d+)?x (PyHessian|faster|steady)", text)


def test_the_recorded_hessian_benchmark_follows_the_protocol():
    assert HESSIAN["starts"] >= _protocol.MIN_STARTS
    assert 0 < HESSIAN["host"]["loop_1e7_additions_s"] < 10
    for workload in ("mlp", "resnet"):
        sides = HESSIAN[workload]["sides"]
        assert {"jaxreg", "pyhessian", "eigenthings", "curvlinops"} <= set(sides)
        threads = {side["versions"]["threads"] for side in sides.values()}
        assert threads == {HESSIAN["threads"]}, "every side gets the same thread count"
        for name, side in sides.items():
            for task, result in side.items():
                if not isinstance(result, dict) or "seconds" not in result:
                    continue
                values = result["seconds"]["values"]
                assert len(values) >= _protocol.MIN_STARTS, (name, task)
                assert result["seconds"]["median"] == statistics.median(values)
                assert result["seconds"]["min"] == min(values) and result["seconds"]["max"] == max(
                    values
                )
        for anchor in ("pyhessian", "eigenthings", "curvlinops"):
            port = sides[anchor]["port_max_logit_difference"]
            assert port < 1e-4, f"{anchor}'s port of the {workload} model differs: {port}"


def test_the_recorded_ratios_are_the_per_start_times_divided():
    for workload in ("mlp", "resnet"):
        section = HESSIAN[workload]
        ours = section["sides"]["jaxreg"]
        for anchor, tasks in section["ratios"].items():
            for task, recorded in tasks.items():
                theirs = section["sides"][anchor][task]["seconds"]["values"]
                mine = ours[task]["seconds"]["values"]
                assert recorded["steady"] == pytest.approx(
                    statistics.median(theirs) / statistics.median(mine)
                )
                assert recorded["range"] == pytest.approx(
                    [min(theirs) / max(mine), max(theirs) / min(mine)]
                )
        assert ratios(section["sides"]) == section["ratios"]


def test_ratios_divides_the_anchor_by_jaxreg_and_skips_failed_or_missing_tasks():
    def side(times, first=1.0):
        return {"seconds": _protocol.spread(times), "first_call_s": first}

    sides = {
        "jaxreg": {"top5": side([1.0, 2.0, 4.0], first=8.0)},
        "pyhessian": {
            "top5": side([10.0, 20.0, 40.0], first=30.0),
            "density": {"failed": "torch.eig"},
        },
        "curvlinops": {"trace": side([3.0])},
    }
    assert ratios(sides) == {
        "pyhessian": {"top5": {"steady": 10.0, "range": [2.5, 40.0], "first_call": 3.75}}
    }


def test_spread_is_median_min_max_and_rejects_nothing_measured():
    assert _protocol.spread([3, 1, 2, 10]) == {
        "median": 2.5,
        "min": 1.0,
        "max": 10.0,
        "values": [3.0, 1.0, 2.0, 10.0],
    }
    with pytest.raises(ValueError, match="values"):
        _protocol.spread([])


def test_the_host_speed_probe_times_a_loop_of_ten_million_additions():
    namespace: dict = {}
    exec(_protocol._LOOP, namespace)
    assert namespace["total"] == sum(range(10_000_000))


def test_benchmarks_readme_describes_the_protocol_each_script_follows():
    text = (ROOT / "benchmarks" / "README.md").read_text()
    for phrase in ("own process", "warm-up", "at least 5 random starts", "10⁷ additions", "JSON"):
        assert phrase in text
    scripts = {p.stem for p in (ROOT / "benchmarks").glob("*.py") if not p.stem.startswith("_")}
    listed = set(re.findall(r"^\| `(\w+)\.py` \|", text, flags=re.M))
    assert scripts - {"readme"} <= listed, scripts - listed


def test_the_workload_file_round_trips_a_parameter_tree_by_path():
    """The sides read weights by path from one .npz; a wrong path would port the wrong layer."""
    import jax.numpy as jnp
    import numpy as np

    from benchmarks import _hessian_jax

    tree = {"layers": [{"kernel": jnp.arange(6.0).reshape(2, 3)}, {"bias": jnp.ones(2)}]}
    flat = _hessian_jax.flatten(tree, "p")
    assert sorted(flat) == ["p/layers/0/kernel", "p/layers/1/bias"]
    back = _hessian_jax.unflatten({"layers": [{"kernel": 0}, {"bias": 0}]}, flat, "p")
    np.testing.assert_array_equal(back["layers"][0]["kernel"], tree["layers"][0]["kernel"])
    np.testing.assert_array_equal(back["layers"][1]["bias"], tree["layers"][1]["bias"])


def test_measure_starts_warms_up_on_its_own_seed_and_measures_the_others():
    """Both sides' loop: the warm-up start is timed apart and never among the measured."""
    seeds = []

    def run(seed):
        seeds.append(seed)
        return seed + 10, seed / 10

    result = _protocol.measure_starts(run, 3)
    assert seeds == [_protocol.WARMUP_START, 0, 1, 2]
    assert result["hvps"]["values"] == [10.0, 11.0, 12.0]
    assert result["error"]["values"] == [0.0, 0.1, 0.2]
    assert len(result["seconds"]["values"]) == 3 and result["first_call_s"] >= 0


def test_interleaved_rotates_the_order_every_round_and_times_each_call_once_per_round():
    order, waited = [], []
    calls = {name: (lambda name=name: order.append(name) or name) for name in "abc"}
    times = _protocol.interleaved(calls, 3, waited.append)
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert waited == order  # every result is waited on
    assert {name: len(values) for name, values in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(t >= 0 for values in times.values() for t in values)
