"""Compound scaling: the (alpha, beta, gamma) grid and its constraint, the scaled networks, the run and its resume."""

import dataclasses
import json

import pytest
from test_search import tiny_data

import lightnets
from lightnets.bench import count
from lightnets.errors import LightnetsError
from lightnets.search import PAPER, ProxyBudget, coefficient_grid, compound_scaling, proxy_data, scaled_args


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNETS_CACHE", str(tmp_path / "cache"))


def test_grid_points_satisfy_the_constraint_and_hold_the_papers_coefficients():
    grid = coefficient_grid(0.05, 0.1)
    assert len(grid) == len(set(grid)) > 20
    for a, b, g in grid:
        assert min(a, b, g) >= 1 and abs(a * b * b * g * g - 2) <= 0.1
        assert all(abs(v / 0.05 - round(v / 0.05)) < 1e-6 for v in (a, b, g))
    assert PAPER in grid and (2.0, 1.0, 1.0) in grid  # depth alone doubles the FLOPs too
    assert max(a for a, _, _ in grid) <= 2.1 and max(b for _, b, _ in grid) ** 2 <= 2.1
    assert PAPER not in coefficient_grid(0.1, 0.1)  # 1.15 is off a grid of step 0.1
    assert PAPER not in coefficient_grid(0.05, 0.05)  # 1.2 * 1.1^2 * 1.15^2 = 1.92
    assert all(abs(a * b * b * g * g - 2) <= 0.01 for a, b, g in coefficient_grid(0.05, 0.01))
    with pytest.raises(LightnetsError, match="need step > 0"):
        coefficient_grid(0.0)


def test_scaled_networks_cost_about_twice_the_base():
    base_args, base_size = scaled_args((1.0, 1.0, 1.0), 0.25, 0.5, 32)
    assert base_args == {"width_mult": 0.25, "depth_mult": 0.5} and base_size == 32
    args, size = scaled_args(PAPER, 0.25, 0.5, 32)
    assert args == {"width_mult": 0.275, "depth_mult": 0.6} and size == 37

    def macs(args, size):
        return count(lightnets.create_model("efficientnet_b0_cifar", **args), size).macs

    base = macs(base_args, base_size)
    for coefficients in (PAPER, (2.0, 1.0, 1.0), (1.0, 1.0, 1.4142)):
        assert 1.5 < macs(*scaled_args(coefficients, 0.25, 0.5, 32)) / base < 2.6  # rounding moves it off 2x


def test_proxy_data_is_resized_to_the_scaled_resolution():
    data = proxy_data(tiny_data(), ProxyBudget(train_images=16, val_images=8, batch_size=8), 37)
    assert data.train.images.shape[1:] == data.test.images.shape[1:] == (3, 37, 37)


def test_compound_scaling_end_to_end_and_resume(one_thread, tmp_path):
    budget = ProxyBudget(train_images=16, val_images=8, epochs=1, batch_size=8)
    kwargs = dict(base_width=0.25, base_depth=0.25, budget=budget, min_time=0.01, out=tmp_path / "scale")
    result = compound_scaling(tiny_data(), grid_limit=1, **kwargs)
    records = [json.loads(line) for line in (tmp_path / "scale" / "grid.jsonl").read_text().splitlines()]
    assert [r["grid"] for r in records][:1] == [True] and sum(r["grid"] for r in records) == 1
    keys = [(r["alpha"], r["beta"], r["gamma"]) for r in records]
    assert len(keys) == len(set(keys)) and (1.0, 1.0, 1.0) in keys and PAPER in keys
    assert all(0 <= r["accuracy"] <= 1 and r["latency_ms"] > 0 and r["macs"] > 0 for r in records)
    assert result.best == keys[0]
    assert [row["scaling"] for row in result.comparison] == ["base", "compound (best of grid)", "compound (paper)",
                                                             "depth only", "width only", "resolution only"]
    rows = {row["scaling"]: row for row in result.comparison}
    assert rows["base"]["MACs x base"] == "1.00" and rows["base"]["input"] == "32"
    best_macs = float(rows["compound (best of grid)"]["MACs x base"])
    for name, moved in (("depth", "alpha"), ("width", "beta"), ("resolution", "gamma")):
        row = rows[f"{name} only"]  # one dimension scaled, to the compound network's MACs
        assert [k for k in ("alpha", "beta", "gamma") if row[k] != "1"] == [moved]
        assert abs(float(row["MACs x base"]) / best_macs - 1) < 0.2
    text = (tmp_path / "scale" / "comparison.md").read_text()
    assert "(the paper's: 1.2, 1.1, 1.15)" in text and "| width only |" in text

    def never(args, size):
        raise AssertionError("a logged point was trained again")

    trained = []
    again = compound_scaling(tiny_data(), grid_limit=1, resume=True, accuracy=never, **kwargs)
    assert again.points == result.points
    with pytest.raises(LightnetsError, match="proxy differ"):
        other = dataclasses.replace(budget, epochs=2)
        compound_scaling(tiny_data(), grid_limit=2, resume=True, **(kwargs | {"budget": other}))
    more = compound_scaling(tiny_data(), grid_limit=3, resume=True,
                            accuracy=lambda args, size: trained.append(size) or 0.5, **kwargs)
    assert len(more.points) == 3 and more.points[0] == result.points[0]
    assert len(trained) == len({(p["alpha"], p["beta"], p["gamma"]) for p in more.points} - set(keys))
    with pytest.raises(LightnetsError, match="already exists and is not empty"):
        compound_scaling(tiny_data(), grid_limit=1, **kwargs)


def test_bad_inputs_are_one_clear_error(tmp_path):
    with pytest.raises(LightnetsError, match="does not take depth_mult"):
        compound_scaling(tiny_data(), model="mobilenetv1_025_cifar", out=tmp_path / "a",
                         budget=ProxyBudget(train_images=16, val_images=8, batch_size=8))
    with pytest.raises(LightnetsError, match="no grid point"):
        compound_scaling(tiny_data(), step=0.3, tolerance=0.01, out=tmp_path / "a")
    with pytest.raises(LightnetsError, match="does not exist"):
        compound_scaling("nowhere", out=tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_cli(capsys, tmp_path):
    from lightnets.cli import main

    assert main(["scale", "--data", "nowhere", "--out", str(tmp_path / "s")]) == 2
    assert "data source 'nowhere' does not exist" in capsys.readouterr().err
    assert main(["scale", "--grid-limit", "0", "--out", str(tmp_path / "s")]) == 2
    assert "grid_limit must be >= 1" in capsys.readouterr().err
