"""Distillation pieces: the loss on hand-computed values, ensembles, class grouping, specialist combination."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightnets.distill import (
    TeacherEnsemble,
    check_same_classes,
    combine_with_specialists,
    distillation_loss,
    group_confused_classes,
    specialist_labels,
)
from lightnets.errors import LightnetsError


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
