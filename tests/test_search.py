"""Latency-aware search: the space, its networks, the latency table, MnasNet's reward and regularized evolution."""

import dataclasses
import json
import random

import pytest
import torch

import lightnets
from lightnets.data import Dataset, Split
from lightnets.errors import LightnetsError
from lightnets.search import (
    SPACES,
    Arch,
    LatencyTable,
    ProxyBudget,
    arch_key,
    build_latency_table,
    device_description,
    get_space,
    network_layers,
    proxy_data,
    regularized_evolution,
    reward,
    search,
    space_layers,
    spearman,
    timed_layers,
)
from lightnets.search import latency as latency_module
from lightnets.search.bisection import bisect_threshold
from lightnets.search.latency import private_cache_bytes
from lightnets.train import load_model, save_checkpoint

CIFAR = get_space("mobilenetv3_cifar")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNETS_CACHE", str(tmp_path / "cache"))


def decisions_differing(a: Arch, b: Arch) -> list[str]:
    diffs = [f"{i}.{f}" for i, (x, y) in enumerate(zip(a.stages, b.stages, strict=True))
             for f in ("kernel", "expand", "se", "layers") if getattr(x, f) != getattr(y, f)]
    return diffs + (["width_mult"] if a.width_mult != b.width_mult else [])


def fake_table(space, size=None) -> LatencyTable:
    """Every entry of the space, with a made-up latency that depends on the key."""
    entries = {k: {"median_ms": 0.01 * (1 + len(k) % 7), "p90_ms": 0.0, "runs": 1} for k in space_layers(space, size)}
    return LatencyTable(device_description("cpu", 1, "wall"), entries)


# --- the architecture record and its networks


@pytest.mark.parametrize("space", list(SPACES.values()), ids=list(SPACES))
def test_sampled_networks_run_and_match_their_layers(space):
    rng = random.Random(0)
    for _ in range(2):
        arch = space.sample(rng)
        model = lightnets.create_model(space.model, arch=arch.to_dict(), num_classes=5).eval()
        size = 32 if space.input_size == 32 else 64
        with torch.no_grad():
            assert model(torch.randn(2, 3, size, size)).shape == (2, 5)
        assert model.total_stride == arch.total_stride == (8 if space.input_size == 32 else 32)
        blocks = [m for stage in model.stages for m in stage]
        assert len(blocks) == sum(s.layers for s in arch.stages) == len(arch.layers(5)) - 2


def test_arch_round_trips_through_dict_json_file_and_checkpoint(tmp_path):
    arch = CIFAR.sample(random.Random(3))
    assert Arch.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch
    (tmp_path / "arch.json").write_text(json.dumps({"model": CIFAR.model, "model_args": {"arch": arch.to_dict()}}))
    from_file = lightnets.create_model(CIFAR.model, arch=str(tmp_path / "arch.json"))
    assert from_file.arch == arch

    model = lightnets.create_model(CIFAR.model, num_classes=3, arch=arch.to_dict()).eval()
    meta = {"model": CIFAR.model, "model_args": {"arch": arch.to_dict()}, "num_classes": 3}
    save_checkpoint(tmp_path / "best", model.state_dict(), meta)
    loaded = load_model(tmp_path / "best")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert loaded.arch == arch


def test_registered_default_is_the_mobilenetv3_large_like_member():
    for space in SPACES.values():
        model = lightnets.create_model(space.model)
        assert model.arch == space.reference()
    ours = lightnets.count_params(lightnets.create_model("mnas_space"))
    theirs = lightnets.count_params(lightnets.create_model("mobilenetv3_large_100"))
    assert abs(ours - theirs) / theirs < 0.01


@pytest.mark.parametrize("change,message", [
    (lambda d: d | {"depth": 2}, "unknown field(s) depth"),
    (lambda d: d | {"stages": [{k: v for k, v in d["stages"][0].items() if k != "se"}]}, "missing field(s) se"),
    (lambda d: d | {"stages": [d["stages"][0] | {"kernel": 4}]}, "stage 0: kernel must be odd"),
    (lambda d: d | {"width_mult": 0}, "width_mult must be > 0"),
])
def test_bad_architectures_are_one_clear_error(change, message):
    with pytest.raises(LightnetsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        lightnets.create_model("mnas_space_cifar", arch=change(CIFAR.reference().to_dict()))


# --- sampling and mutation


def test_sampling_and_mutation_stay_in_the_space_and_are_seeded():
    for space in SPACES.values():
        rng = random.Random(1)
        for _ in range(50):
            arch = space.sample(rng)
            space.check(arch)
            child = space.mutate(arch, rng)
            space.check(child)
            assert len(decisions_differing(arch, child)) == 1
        assert space.sample(random.Random(7)) == space.sample(random.Random(7))
    assert len({arch_key(CIFAR.sample(random.Random(i))) for i in range(20)}) == 20


def test_check_rejects_a_member_of_another_space():
    imagenet = get_space("mobilenetv3").reference()
    with pytest.raises(LightnetsError, match="stem"):
        CIFAR.check(imagenet)
    wide = dataclasses.replace(CIFAR.reference(), width_mult=2.0)
    with pytest.raises(LightnetsError, match="width_mult 2.0 is not in space"):
        CIFAR.check(wide)


# --- the latency table


def test_space_layers_cover_every_member_and_table_sums_its_layers():
    table = fake_table(CIFAR)
    rng = random.Random(2)
    for _ in range(20):
        arch = CIFAR.sample(rng)
        layers = timed_layers(arch, 32, 10)
        assert {k for k, _, _ in layers} <= set(table.entries)
        expected = sum(table.entries[k]["median_ms"] for k, _, _ in layers)
        assert table.predict(arch, 32, 10) == pytest.approx(expected)
        assert len(layers) == sum(s.layers for s in arch.stages) + 2


def test_table_keys_follow_resolution_and_input_size():
    keys = [k for k, _, _ in timed_layers(CIFAR.reference(), 32, 10)]
    assert keys[0].endswith("@32x32") and keys[-1].endswith("@4x4")
    assert [k for k, _, _ in timed_layers(CIFAR.reference(), 64, 10)][-1].endswith("@8x8")
    imagenet = [k for k, _, _ in timed_layers(get_space("mobilenetv3").reference(), 224, 1000)]
    assert imagenet[0].endswith("@224x224") and imagenet[-1].endswith("classes1000 @7x7")


def test_missing_entry_is_a_clear_error():
    table = fake_table(CIFAR)
    arch = CIFAR.reference()
    key = timed_layers(arch, 32, 10)[3][0]
    del table.entries[key]
    with pytest.raises(LightnetsError, match="no entry 'block"):
        table.predict(arch, 32, 10)
    with pytest.raises(LightnetsError, match="no entry"):
        table.predict(arch, 64, 10)  # another input size is another set of entries


def test_table_file_is_measured_once_reused_and_tied_to_its_device(tmp_path, monkeypatch):
    tiny = dataclasses.replace(CIFAR.reference(), stages=CIFAR.reference().stages[:2], width_mult=0.5)
    layers = network_layers([tiny], 16, 10)
    path = tmp_path / "table.json"
    table = build_latency_table(layers, path, min_time=0.01, progress=False)
    assert set(table.entries) == set(layers) and all(e["median_ms"] > 0 for e in table.entries.values())
    assert table.predict(tiny, 16, 10) > 0

    def no_measuring(*args, **kwargs):
        raise AssertionError("an entry in the file was measured again")

    monkeypatch.setattr(latency_module, "measure", no_measuring)
    again = build_latency_table(layers, path, min_time=0.01, progress=False)
    assert again.entries == table.entries
    data = json.loads(path.read_text())
    data["device"]["name"] = "another CPU"
    path.write_text(json.dumps(data))
    with pytest.raises(LightnetsError, match="was measured on"):
        build_latency_table(layers, path, progress=False)


def test_spearman_rank_correlation():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833)  # ties share their mean rank
    with pytest.raises(LightnetsError, match="equal length"):
        spearman([1.0], [1.0])


def test_cpu_clock_needs_one_cpu_thread():
    with pytest.raises(LightnetsError, match="--threads 1"):
        build_latency_table({}, None, threads=2, clock="cpu")


# --- the reward and the search


def test_reward_on_known_values():
    assert reward(0.8, 2.0, 1.0, w=-0.07) == pytest.approx(0.8 * 2 ** -0.07)
    assert reward(0.8, 5.0, 5.0) == pytest.approx(0.8)
    assert reward(0.7, 1.0, 2.0, w=-0.15) == pytest.approx(0.7 * 0.5 ** -0.15)  # under target: a bonus
    # MnasNet's two exponents: alpha at or under T, beta over it.
    assert reward(0.5, 1.0, 2.0, w=-0.07, w_over=-1.0) == pytest.approx(0.5 * 0.5 ** -0.07)
    assert reward(0.5, 4.0, 2.0, w=-0.07, w_over=-1.0) == pytest.approx(0.25)
    with pytest.raises(LightnetsError, match="must be > 0"):
        reward(0.5, 0.0, 2.0)


def fake_accuracy(arch: Arch) -> float:
    """Deeper, wider, 5x5 and SE all help, as a real accuracy would tend to."""
    score = sum(s.layers + (s.kernel == 5) + s.se + s.expand / 6 for s in arch.stages)
    return score / 40 + arch.width_mult / 4


def fake_latency(arch: Arch) -> float:
    return sum(s.layers * s.expand * (1 + s.se) * s.kernel for s in arch.stages) * arch.width_mult / 20


def test_regularized_evolution_logic():
    calls = []

    def accuracy(arch):
        calls.append(arch_key(arch))
        return fake_accuracy(arch)

    seen = []
    history = regularized_evolution(CIFAR, accuracy, fake_latency, target_ms=5.0, population=6, sample=2, cycles=30,
                                    seed=4, on_candidate=seen.append)
    assert len(history) == 36 and seen == history
    assert all(c.parent is None for c in history[:6]) and all(c.parent is not None for c in history[6:])
    for c in history[6:]:
        assert c.parent < c.index
        assert len(decisions_differing(history[c.parent].arch, c.arch)) == 1
        # the parent was alive: one of the `population` candidates just before the child
        assert c.index - 6 <= c.parent
    for c in history:
        assert c.reward == pytest.approx(reward(fake_accuracy(c.arch), fake_latency(c.arch), 5.0))
    assert len(calls) == len(set(calls)) == len({arch_key(c.arch) for c in history})  # each network trained once
    again = regularized_evolution(CIFAR, fake_accuracy, fake_latency, target_ms=5.0, population=6, sample=2,
                                  cycles=30, seed=4)
    assert [arch_key(c.arch) for c in again] == [arch_key(c.arch) for c in history]


def test_evolution_beats_random_sampling_on_the_same_budget():
    def best(history):
        return max(c.reward for c in history)

    wins = 0
    for seed in range(5):
        evolved = regularized_evolution(CIFAR, fake_accuracy, fake_latency, target_ms=5.0, population=10, sample=5,
                                        cycles=90, seed=seed)
        randomly = regularized_evolution(CIFAR, fake_accuracy, fake_latency, target_ms=5.0, population=100, sample=1,
                                         cycles=0, seed=seed)
        wins += best(evolved) > best(randomly)
    assert wins >= 4


def test_known_accuracies_are_reused():
    first = regularized_evolution(CIFAR, fake_accuracy, fake_latency, target_ms=5.0, population=3, sample=2,
                                  cycles=3, seed=1)
    known = {arch_key(c.arch): c.accuracy for c in first}

    def never(arch):
        raise AssertionError("a known architecture was trained again")

    again = regularized_evolution(CIFAR, never, fake_latency, target_ms=5.0, population=3, sample=2, cycles=3,
                                  seed=1, known=known)
    assert [c.reward for c in again] == [c.reward for c in first]


@pytest.mark.parametrize("kwargs", [{"population": 0}, {"sample": 4}, {"cycles": -1}])
def test_bad_evolution_settings(kwargs):
    settings = {"population": 3, "sample": 2, "cycles": 1} | kwargs
    with pytest.raises(LightnetsError, match="population"):
        regularized_evolution(CIFAR, fake_accuracy, fake_latency, target_ms=1.0, **settings)


def tiny_data(n=80, classes=4) -> Dataset:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % classes
    images = (torch.rand(n, 3, 32, 32, generator=g) * 100 + labels.view(-1, 1, 1, 1) * 40).to(torch.uint8)
    return Dataset(Split(images, labels), Split(images[:8], labels[:8]), [str(i) for i in range(classes)], "tiny")


def test_proxy_data_is_balanced_disjoint_and_from_the_training_split():
    data = proxy_data(tiny_data(), ProxyBudget(train_images=40, val_images=20, batch_size=8))
    assert len(data.train) == 40 and len(data.test) == 20
    assert data.train.labels.bincount().tolist() == [10] * 4 and data.test.labels.bincount().tolist() == [5] * 4
    with pytest.raises(LightnetsError, match="the proxy needs"):
        proxy_data(tiny_data(), ProxyBudget(train_images=70, val_images=20))


def test_search_end_to_end(tmp_path):
    """Two candidates (one random, one mutated), a few images, one short epoch each; latencies from a table
    file already filled in."""
    table = tmp_path / "table.json"
    fake_table(CIFAR).save(table)
    budget = ProxyBudget(train_images=32, val_images=16, epochs=1, batch_size=16)
    kwargs = dict(population=1, sample=1, cycles=1, budget=budget, table=table, out=tmp_path / "run")
    result = search("mobilenetv3_cifar", tiny_data(), **kwargs)
    lines = (tmp_path / "run" / "candidates.jsonl").read_text().splitlines()
    assert len(lines) == len(result.candidates) == 2 and result.candidates[1].parent == 0
    records = [json.loads(line) for line in lines]
    assert all(0 <= r["accuracy"] <= 1 and r["latency_ms"] > 0 for r in records)
    reference = LatencyTable.load(table).predict(CIFAR.reference(), 32, 10)
    assert result.target_ms == pytest.approx(reference)

    best = json.loads((tmp_path / "run" / "best_arch.json").read_text())
    assert best["reward"] == max(r["reward"] for r in records)
    model = lightnets.create_model(best["model"], **best["model_args"])
    assert model.arch == Arch.from_dict(records[best["candidate"]]["arch"])
    assert (tmp_path / "run" / "pareto.png").stat().st_size > 0

    def never(arch):
        raise AssertionError("a logged architecture was trained again")

    resumed = search("mobilenetv3_cifar", tiny_data(), accuracy=never, resume=True, **kwargs)
    assert [c.accuracy for c in resumed.candidates] == [c.accuracy for c in result.candidates]
    with pytest.raises(LightnetsError, match="proxy differ"):
        search("mobilenetv3_cifar", tiny_data(), resume=True, **(kwargs | {"budget": ProxyBudget(epochs=2)}))


def test_cli(capsys, tmp_path):
    from lightnets.cli import main

    fake_table(CIFAR).save(tmp_path / "table.json")  # complete: nothing left to measure
    assert main(["latency-table", "--space", "mobilenetv3_cifar", "--table", str(tmp_path / "table.json")]) == 0
    assert f"wrote {tmp_path / 'table.json'}: {len(space_layers(CIFAR))} entries" in capsys.readouterr().out
    assert main(["latency-table", "--space", "resnet"]) == 2
    assert "unknown search space 'resnet'; choose from mobilenetv3, mobilenetv3_cifar" in capsys.readouterr().err
    assert main(["search", "--population", "2", "--sample", "3", "--data", "nowhere", "--out", str(tmp_path)]) == 2
    assert "lightnets: error:" in capsys.readouterr().err


def test_bisect_threshold_brackets_where_a_monotone_test_turns() -> None:
    asked: list[float] = []

    def below(value: float) -> bool:
        asked.append(value)
        return value ** 2 <= 2.0

    lo, hi = bisect_threshold(1.0, 2.0, below, 0.001)
    assert hi - lo <= 0.001 and lo <= 2 ** 0.5 < hi
    tested = list(asked)
    assert tested and all(round(v, 4) == v for v in tested)
    assert all(v ** 2 <= 2.0 for v in tested if v <= lo) and all(v ** 2 > 2.0 for v in tested if v >= hi)


def test_private_cache_is_the_largest_cache_the_first_core_does_not_share(tmp_path):
    for name, size, shared in (("index0", "48K", "0"), ("index2", "1024K", "0"), ("index3", "32768K", "0-1")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "size").write_text(size + "\n")
        (tmp_path / name / "shared_cpu_list").write_text(shared + "\n")
    assert private_cache_bytes(tmp_path) == 1 << 20
    assert private_cache_bytes(tmp_path / "missing", default=123) == 123
