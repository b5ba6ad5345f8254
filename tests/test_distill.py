"""Distillation: the loss on hand-computed values, ensembles, class grouping, specialist combination, and the
runs built on them (``lightnets.distill``, ``lightnets.specialists``, their commands, resume)."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from test_train import tiny_split
from torch import nn

from lightnets import distill, evaluate, load_model
from lightnets.cli import main
from lightnets.data import Dataset, normalize
from lightnets.errors import LightnetsError
from lightnets.models import create_model
from lightnets.train import Distillation, Recipe, save_checkpoint
from lightnets.train.distill import TeacherEnsemble, check_same_classes, distillation_loss
from lightnets.train.specialists import (
    SPECIALIST_RECIPE,
    combine_with_specialists,
    enriched_split,
    group_confused_classes,
    init_specialist,
    specialist_labels,
)

MODEL = "mobilenetv1_025_cifar"  # the smallest registered model; stride 8, so 16-pixel inputs do


def test_loss_matches_hand_computation():
    student = torch.tensor([[1.0, 0.0]])
    teacher_probs = torch.tensor([[0.5, 0.5]])
    labels = torch.tensor([0])
    t, alpha = 2.0, 0.5
    # student at T=2: softmax([0.5, 0]) = [s, 1-s]
    s = math.exp(0.5) / (math.exp(0.5) + 1)
    kl = 0.5 * math.log(0.5 / s) + 0.5 * math.log(0.5 / (1 - s))
    ce = -math.log(math.exp(1) / (math.exp(1) + 1))
    expected = alpha * t**2 * kl + (1 - alpha) * ce
    got = distillation_loss(student, teacher_probs, labels, temperature=t, alpha=alpha)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_t_squared_scaling_and_alpha_zero():
    torch.manual_seed(0)
    student, teacher = torch.randn(8, 5), torch.randn(8, 5)
    labels = torch.randint(0, 5, (8,))
    for t in (1.0, 3.0, 10.0):
        probs = F.softmax(teacher / t, dim=1)
        soft_only = distillation_loss(student, probs, labels, temperature=t, alpha=1.0)
        kl = F.kl_div(F.log_softmax(student / t, 1), probs, reduction="batchmean")
        assert soft_only.item() == pytest.approx((t**2 * kl).item(), rel=1e-6)
    plain = distillation_loss(student, F.softmax(teacher, 1), labels, temperature=5.0, alpha=0.0)
    assert plain.item() == pytest.approx(F.cross_entropy(student, labels).item(), rel=1e-6)


def test_loss_rejects_bad_arguments():
    x = torch.randn(2, 3)
    with pytest.raises(LightnetsError, match="alpha must be between 0 and 1, got 1.5"):
        distillation_loss(x, F.softmax(x, 1), torch.tensor([0, 1]), alpha=1.5)
    with pytest.raises(LightnetsError, match="temperature must be > 0"):
        distillation_loss(x, F.softmax(x, 1), torch.tensor([0, 1]), temperature=0)
    with pytest.raises(LightnetsError, match="same classes"):
        distillation_loss(x, torch.full((2, 4), 0.25), torch.tensor([0, 1]))


def test_ensemble_of_one_equals_member_and_averages():
    torch.manual_seed(0)
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    x = torch.randn(5, 4)
    one = TeacherEnsemble([a])(x, temperature=3.0)
    assert torch.allclose(one, F.softmax(a(x) / 3.0, 1))
    both = TeacherEnsemble([a, b])(x, temperature=2.0)
    assert torch.allclose(both, (F.softmax(a(x) / 2, 1) + F.softmax(b(x) / 2, 1)) / 2)
    by_logits = TeacherEnsemble([a, b], combine="logits")(x, temperature=2.0)
    assert torch.allclose(by_logits, F.softmax((a(x) + b(x)) / 4, 1))
    ens = TeacherEnsemble([a])
    ens.train()
    assert not ens.training and not any(p.requires_grad for p in ens.parameters())


def test_ensemble_resizes_for_teacher_input_size():
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append(tuple(x.shape[-2:]))
            return x.mean((2, 3))

    TeacherEnsemble([Probe()], input_sizes=[64])(torch.randn(2, 3, 32, 32))
    assert seen == [(64, 64)]


def test_class_lists_must_match():
    check_same_classes([["cat", "dog"]], ["cat", "dog"])
    with pytest.raises(LightnetsError, match="teacher 0 predicts classes"):
        check_same_classes([["dog", "cat"]], ["cat", "dog"])


def test_grouping_recovers_planted_groups():
    """A generalist that confuses {0,1,2} among themselves and {5,6} among themselves."""
    torch.manual_seed(0)
    num_classes, n = 8, 4000
    true = torch.randint(0, num_classes, (n,))
    planted = [[0, 1, 2], [5, 6]]
    probs = torch.zeros(n, num_classes)
    probs[torch.arange(n), true] = 0.6
    for i in range(n):
        c = true[i].item()
        group = next((g for g in planted if c in g), [c])
        noise = torch.rand(len(group))
        probs[i, group] += 0.4 * noise / noise.sum()
    probs /= probs.sum(1, keepdim=True)
    groups = group_confused_classes(probs, num_groups=5, seed=0)
    assert [0, 1, 2] in groups and [5, 6] in groups


def test_grouping_finds_rare_confused_classes_next_to_frequent_ones():
    """Raw covariance columns scale with how often a class occurs, so they group the rare classes {4, 5, 6, 7}
    together; the confusions are {4, 5} and {6, 7}."""
    g = torch.Generator().manual_seed(0)
    n = 3000
    true = torch.multinomial(torch.tensor([0.3, 0.3, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05]), n, True, generator=g)
    probs = torch.full((n, 8), 0.02)
    probs[torch.arange(n), true] = 0.9
    for a, b in ((4, 5), (5, 4), (6, 7), (7, 6)):  # half the images of a look like b as well
        idx = torch.nonzero((true == a) & (torch.rand(n, generator=g) < 0.5)).flatten()
        probs[idx, a], probs[idx, b] = 0.5, 0.4
    groups = group_confused_classes(probs / probs.sum(1, keepdim=True), num_groups=5, seed=0)
    assert [4, 5] in groups and [6, 7] in groups


def test_specialist_labels_use_a_dustbin():
    labels = torch.tensor([3, 5, 0, 7, 5])
    assert specialist_labels(labels, [3, 5], num_classes=10).tolist() == [0, 1, 2, 2, 1]


def test_specialists_sharpen_the_confused_classes():
    generalist = torch.tensor([[0.45, 0.40, 0.15]])  # unsure between classes 0 and 1
    specialist = torch.tensor([[0.05, 0.90, 0.05]])  # group [0, 1] + dustbin: confident it is class 1
    q = combine_with_specialists(generalist, [specialist], [[0, 1]], top_k=2)
    assert q.argmax(1).item() == 1
    assert q.sum().item() == pytest.approx(1.0, abs=1e-5)
    # a specialist whose group misses the generalist's top classes is ignored
    q_inactive = combine_with_specialists(generalist, [torch.tensor([[0.9, 0.05, 0.05]])], [[2, 1]], top_k=1)
    assert torch.allclose(q_inactive, generalist, atol=1e-3)


# --- distillation and specialist runs -------------------------------------------------------------


@pytest.fixture(autouse=True)
def _cache_and_one_thread(tmp_path, monkeypatch):
    """A private data cache; one thread (tiny models gain nothing from more, and the commands set it anyway)."""
    monkeypatch.setenv("LIGHTNETS_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_checkpoint(stem, classes, image_size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), signs=None):
    """An untrained checkpoint whose BatchNorm statistics come from random images (a fresh net in eval mode
    outputs almost nothing). ``signs`` makes every classifier row a signed copy of one direction, so
    the classes with the same sign rise and fall together: a generalist that confuses them."""
    torch.manual_seed(len(classes) + image_size)
    net = create_model(MODEL, num_classes=len(classes))
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # a plain average over the calibration batch
    with torch.no_grad():
        net.train()(torch.randn(32, 3, image_size, image_size))
        if signs is not None:
            fc = net.get_classifier()
            direction = torch.randn(fc.weight.shape[1])
            fc.weight.copy_(torch.tensor(signs, dtype=torch.float32)[:, None] * direction / direction.norm() * 8)
            fc.bias.zero_()
    save_checkpoint(stem, net.state_dict(), {"model": MODEL, "model_args": {}, "num_classes": len(classes),
                                             "classes": list(classes), "image_size": image_size, "mean": list(mean),
                                             "std": list(std), "recipe": {"seed": 0}, "metrics": {"val_top1": 50.0}})
    return stem.with_suffix(".safetensors")


def write_images(root, classes, train=16, test=4, size=32):
    """An image folder (train/ and test/, one subfolder per class) with class-dependent colours."""
    g = torch.Generator().manual_seed(0)
    for c, name in enumerate(classes):
        for split, n in (("train", train), ("test", test)):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = (torch.rand(size, size, 3, generator=g) * 100 + c * 70).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


def tiny_data(size=16):
    return Dataset(tiny_split(48, size), tiny_split(12, size, seed=1), ["a", "b", "c"], "tiny")


def test_teacher_gets_its_own_normalisation_and_input_size(tmp_path):
    """The soft targets equal the teacher's softmax on the batch re-standardised by hand and resized."""
    t_mean, t_std, s_mean, s_std = [0.2, 0.3, 0.4], [0.3, 0.2, 0.1], [0.5, 0.45, 0.4], [0.25, 0.2, 0.3]
    path = make_checkpoint(tmp_path / "teacher", ["a", "b", "c"], image_size=24, mean=t_mean, std=t_std)
    setup = Distillation([path], temperature=2.0, alpha=0.5)
    student = create_model(MODEL, num_classes=3).eval()
    task = setup.build(student, tiny_data(), Recipe(), s_mean, s_std, torch.device("cpu"))
    x, y = normalize(tiny_split(8, 16).images, s_mean, s_std), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    raw = x * torch.tensor(s_std).view(1, 3, 1, 1) + torch.tensor(s_mean).view(1, 3, 1, 1)
    manual = (raw - torch.tensor(t_mean).view(1, 3, 1, 1)) / torch.tensor(t_std).view(1, 3, 1, 1)
    manual = F.interpolate(manual, size=(24, 24), mode="bilinear", align_corners=False)
    with torch.no_grad():
        expected = F.softmax(load_model(path)(manual) / 2.0, dim=1)
        torch.testing.assert_close(task.teachers(x, 2.0), expected, rtol=1e-4, atol=1e-5)
        loss, metrics = task(student, (x, y))
        torch.testing.assert_close(loss, distillation_loss(student(x), expected, y, 2.0, 0.5), rtol=1e-4, atol=1e-5)
    assert set(metrics) == {"acc", "teacher_acc"}
    with pytest.raises(LightnetsError, match="need input_norm"):
        TeacherEnsemble([nn.Identity()], norms=[(t_mean, t_std)])


def test_distill_runs_through_fit_and_records_teachers(tmp_path):
    teachers = [make_checkpoint(tmp_path / "t1", ["a", "b", "c"], image_size=24, mean=[0.3] * 3),
                make_checkpoint(tmp_path / "t2", ["a", "b", "c"])]
    result = distill(MODEL, teachers, tiny_data(), out=tmp_path / "run", combine="logits",
                     distill_recipe="hinton-asr", epochs=1, batch_size=8, warmup=0, progress=False)
    record = json.loads((tmp_path / "run" / "config.json").read_text())["distill"]
    assert [t["path"] for t in record["teachers"]] == [str(p.resolve()) for p in teachers]
    assert [t["image_size"] for t in record["teachers"]] == [24, 16] and record["teachers"][0]["mean"] == [0.3] * 3
    assert (record["temperature"], record["alpha"], record["combine"]) == (20.0, 0.5, "logits")
    assert json.loads((tmp_path / "run" / "best.json").read_text())["distill"] == record
    assert {"train_acc", "train_teacher_acc", "val_top1"} <= set(result.history[0])
    assert result.config["kind"] == "distill" and result.test.count == 12


def test_distill_refuses_teachers_with_other_classes(tmp_path):
    teacher = make_checkpoint(tmp_path / "t", ["a", "c", "b"])
    with pytest.raises(LightnetsError, match=r"teacher 0 predicts classes \['a', 'c', 'b'\] but the data has"):
        distill(MODEL, teacher, tiny_data(), out=tmp_path / "run", epochs=1, warmup=0, progress=False)
    assert not (tmp_path / "run").exists()


def test_cli_distill_resume(tmp_path, capsys):
    data = write_images(tmp_path / "data", ["dark", "light"])
    t1 = make_checkpoint(tmp_path / "t1", ["dark", "light"], image_size=24, mean=[0.3] * 3)
    t2 = make_checkpoint(tmp_path / "t2", ["dark", "light"])
    out = tmp_path / "run"
    argv = ["distill", "--teacher", f"{t1},{t2.with_suffix('.json')}", "--student", MODEL, "--data", str(data),
            "--image-size", "16", "--epochs", "1", "--batch-size", "8", "--warmup", "0", "--temperature", "3",
            "--out", str(out), "--quiet", "--threads", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "best top-1 %" in printed and f"run folder: {out}" in printed
    assert f"taught by {MODEL}, {MODEL} (T=3, alpha=0.9, probs averaged)" in printed
    assert main(["train", "--resume", str(out), "--epochs", "2"]) == 2
    assert f"is a distill run, not a train run; resume it with `lightnets distill --resume {out}`" in \
        capsys.readouterr().err
    assert main(["distill", "--resume", str(out), "--alpha", "0.5"]) == 2
    assert "keeps its teachers" in capsys.readouterr().err
    assert main(["distill", "--resume", str(out), "--epochs", "2", "--quiet", "--threads", "1"]) == 0
    assert "taught by" in capsys.readouterr().out
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2] and "train_teacher_acc" in history[1]
    assert json.loads((out / "last.json").read_text())["distill"]["temperature"] == 3.0


def test_specialist_starts_as_the_generalist_folded_and_trains_on_enriched_data():
    torch.manual_seed(0)
    generalist = create_model(MODEL, num_classes=5).eval()
    specialist = create_model(MODEL, num_classes=3).eval()
    init_specialist(specialist, generalist.state_dict(), [3, 1])
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        features = generalist.forward_head(generalist.forward_features(x), pre_logits=True)
        g, s = generalist(x), specialist(x)
    torch.testing.assert_close(s[:, :2], g[:, [3, 1]])
    fc = generalist.get_classifier()
    dustbin = features @ fc.weight[[0, 2, 4]].mean(0) + fc.bias[[0, 2, 4]].mean() + math.log(3)
    torch.testing.assert_close(s[:, 2], dustbin)
    assert (s[:, 2] <= torch.logsumexp(g[:, [0, 2, 4]], 1) + 1e-5).all()
    split = tiny_split(60, 4, classes=5)
    enriched = enriched_split(split, [3, 1], 5, seed=0)
    assert len(enriched) == 48 and (enriched.labels < 2).sum() == 24  # all 24 of the group, 24 of the rest
    assert set(enriched.labels.tolist()) == {0, 1, 2}


def test_cli_specialists_end_to_end(tmp_path, capsys):
    data = write_images(tmp_path / "data", ["a", "b", "c"])
    generalist = make_checkpoint(tmp_path / "gen", ["a", "b", "c"], signs=[1, 1, -1])  # confuses a and b
    out = tmp_path / "spec"
    argv = ["specialists", str(generalist), "--data", str(data), "--groups", "2", "--held-out", "40", "--epochs", "1",
            "--batch-size", "8", "--out", str(out), "--quiet", "--threads", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "specialist for a, b:" in printed and "generalist + specialists" in printed
    report = json.loads((out / "specialists.json").read_text())
    assert report["groups"] == [["a", "b"]] and report["held_out"]["images"] == 40
    assert report["group_test_images"] == 8 and report["test_images"] == 12
    gen_eval = evaluate(generalist, data)
    assert report["accuracy"]["generalist"]["all"] == pytest.approx(gen_eval.top1)
    # the group's own accuracy: the per-class accuracies of a and b, weighted by their test images
    support = gen_eval.confusion.sum(1)[:2].double()
    group_top1 = float((torch.tensor(gen_eval.per_class[:2], dtype=torch.float64) * support).sum() / support.sum())
    assert report["accuracy"]["generalist"]["a, b"] == pytest.approx(group_top1)
    assert "top-1 % (a, b)" in printed
    meta = json.loads((out / "specialist-0" / "best.json").read_text())
    assert meta["classes"] == ["a", "b", "(other)"] and meta["specialist"]["group"] == ["a", "b"]
    assert meta["mean"] == [0.5] * 3 and (out / "specialist-0" / "metrics.jsonl").is_file()
    assert meta["recipe"]["lr"] == SPECIALIST_RECIPE.lr  # fine-tuned, not trained at the full rate
    assert main(argv) == 2 and "already exists" in capsys.readouterr().err
