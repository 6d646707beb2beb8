"""Transfer core (paper §5.2, Tables 4, 5, 7): hand-computable classifier solutions, the
Caltech metric, a Bayes-rate case, and feature extraction on a tiny ZFNet."""
import math

import pytest
import torch

from zfnet_cli.model import ModelConfig, ZFNet
from zfnet_cli.transfer import (extract_features, few_shot_eval,
                                mean_per_class_accuracy, pool_feature_map, train_linear)

LOSSES = ("softmax", "hinge")


# --- the metric --------------------------------------------------------------------------------

def test_mean_per_class_accuracy_hand_case():
    # class 0: 6 images, 6 right; class 1: 2 images, 1 right; class 2: 2 images, 0 right;
    # class 3: no image (ignored). Plain accuracy 7/10 = 70; per class (1 + 1/2 + 0) / 3 = 50.
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 0, 0, 0, 0, 0, 1, 0, 3, 1])
    assert (pred == labels).float().mean().item() == pytest.approx(0.7)
    assert mean_per_class_accuracy(pred, labels, 4) == pytest.approx(50.0)
    assert mean_per_class_accuracy(labels, labels, 4) == 100.0


# --- the classifiers ---------------------------------------------------------------------------

def _blobs(centers: torch.Tensor, n: int, std: float, seed: int):
    gen = torch.Generator().manual_seed(seed)
    k, d = centers.shape
    x = centers.repeat_interleave(n, dim=0) + std * torch.randn(k * n, d, generator=gen)
    return x, torch.arange(k).repeat_interleave(n)


@pytest.mark.parametrize("loss", LOSSES)
def test_separable_blobs_all_right(loss):
    centers = 6.0 * torch.eye(4, 10)  # 4 classes in 10-D, 6 sigma apart along axes
    xtr, ytr = _blobs(centers, 10, 1.0, seed=0)
    xte, yte = _blobs(centers, 50, 1.0, seed=1)
    clf = train_linear(xtr, ytr, 4, loss=loss, weight_decay=1e-3)
    assert clf.weight.shape == (4, 10) and clf.bias.shape == (4,)
    assert mean_per_class_accuracy(clf.predict(xte), yte, 4) == 100.0


@pytest.mark.parametrize("loss", LOSSES)
def test_overlapping_blobs_near_bayes_rate(loss):
    # N(-1, 1) vs N(+1, 1) along dim 0, 4 pure-noise dims: the Bayes rule (x0 > 0) is right with
    # probability Phi(1) = 84.13% for each class.
    bayes = 100 * 0.5 * (1 + math.erf(1 / math.sqrt(2)))
    centers = torch.zeros(2, 5)
    centers[0, 0], centers[1, 0] = -1.0, 1.0
    xtr, ytr = _blobs(centers, 200, 1.0, seed=2)
    xte, yte = _blobs(centers, 2000, 1.0, seed=3)  # per-class s.e. ~0.8 points
    clf = train_linear(xtr, ytr, 2, loss=loss, weight_decay=1e-2)
    acc = mean_per_class_accuracy(clf.predict(xte), yte, 2)
    assert bayes - 3.0 < acc < bayes + 2.0, f"{acc:.2f}% vs Bayes {bayes:.2f}%"


def test_hinge_two_points_closed_form():
    # x = 0 (class 0) and 4 (class 1) standardise to z = -1, +1. Each one-vs-rest SVM then has
    # b = 0 by symmetry and minimises (1 - w)^2 + lam / 2 * w^2, so |w| = 2 / (2 + lam) = 0.8
    # for lam = 0.5, and the boundary is the midpoint x = 2.
    clf = train_linear(torch.tensor([[0.0], [4.0]]), torch.tensor([0, 1]), 2, loss="hinge",
                       weight_decay=0.5)
    assert clf.mean.item() == 2.0 and clf.std.item() == 2.0
    torch.testing.assert_close(clf.weight, torch.tensor([[-0.8], [0.8]]), atol=1e-4, rtol=0)
    torch.testing.assert_close(clf.bias, torch.zeros(2), atol=1e-4, rtol=0)
    assert clf.predict(torch.tensor([[1.99], [2.01], [-5.0], [9.0]])).tolist() == [0, 1, 0, 1]


def test_softmax_recovers_closed_form_probabilities():
    # Two inputs, each seen 4 times: at x = -1 three of class 0 and one of class 1, at x = +1
    # the reverse. The unregularised maximum-likelihood logistic fit is saturated (two
    # parameters, two inputs), so it reproduces the empirical frequencies 1/4 and 3/4.
    x = torch.tensor([-1.0] * 4 + [1.0] * 4)[:, None]
    y = torch.tensor([0, 0, 0, 1, 0, 1, 1, 1])
    clf = train_linear(x, y, 2, loss="softmax", weight_decay=0.0)
    p = clf.scores(torch.tensor([[-1.0], [1.0]])).softmax(dim=1)
    torch.testing.assert_close(p, torch.tensor([[0.75, 0.25], [0.25, 0.75]]), atol=1e-3, rtol=0)


@pytest.mark.parametrize("batch_size", [None, 8])
def test_deterministic_for_a_seed(batch_size):
    x, y = _blobs(torch.randn(3, 6, generator=torch.Generator().manual_seed(0)), 8, 1.0, seed=4)
    kw = dict(loss="softmax", weight_decay=1e-2, epochs=20, batch_size=batch_size)
    a = train_linear(x, y, 3, seed=5, **kw)
    b = train_linear(x, y, 3, seed=5, **kw)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    if batch_size is not None:  # the seed does drive the mini-batch order
        c = train_linear(x, y, 3, seed=6, **kw)
        assert not torch.equal(a.weight, c.weight)


def test_constant_feature_is_not_divided_by_zero():
    x = torch.tensor([[0.0, 0.0], [4.0, 0.0]])  # feature 1 never fires in training
    clf = train_linear(x, torch.tensor([0, 1]), 2, loss="hinge", weight_decay=0.5)
    assert clf.std[1].item() == 1.0 and clf.weight[:, 1].abs().max().item() == 0.0
    assert clf.predict(torch.tensor([[1.0, 1e6], [3.0, 1e6]])).tolist() == [0, 1]


def test_train_linear_under_no_grad():
    x, y = torch.tensor([[0.0], [4.0]]), torch.tensor([0, 1])
    with torch.no_grad():
        clf = train_linear(x, y, 2, loss="hinge", weight_decay=0.5)
    torch.testing.assert_close(clf.weight, torch.tensor([[-0.8], [0.8]]), atol=1e-4, rtol=0)


def test_train_linear_rejects_bad_input():
    with pytest.raises(ValueError, match="loss"):
        train_linear(torch.zeros(2, 1), torch.tensor([0, 1]), 2, loss="hinge2")
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        train_linear(torch.zeros(2, 1), torch.tensor([0, 2]), 2)


# --- folds -------------------------------------------------------------------------------------

def test_few_shot_eval_mean_and_std():
    # Train on {0, 1} (class 0) and {10, 11} (class 1) every fold; the boundary is near 5.5.
    x = torch.tensor([0.0, 1.0, 10.0, 11.0, 0.5, 10.5, 10.2])[:, None]
    y = torch.tensor([0, 0, 1, 1, 0, 0, 1])  # image 5 is a class-0 image on class 1's side
    train = [0, 1, 2, 3]
    splits = [(train, [4, 6]),  # 100
              (train, [4, 5, 6]),  # class 0: 1/2, class 1: 1/1 -> 75
              (torch.tensor(train), torch.tensor([5, 6]))]  # class 0: 0/1, class 1: 1/1 -> 50
    r = few_shot_eval(x, y, splits, 2, loss="softmax", weight_decay=1e-2)
    assert r["accuracies"] == [100.0, 75.0, 50.0]
    assert r["mean"] == 75.0 and r["folds"] == 3 and len(r["fit_seconds"]) == 3
    assert r["std"] == pytest.approx(25.0)  # sample std: sqrt((25^2 + 0 + 25^2) / 2)


# --- features ----------------------------------------------------------------------------------

@pytest.fixture
def tiny():
    """A tiny ZFNet (64 px input, 5 classes) and 6 images."""
    torch.manual_seed(0)
    net = ZFNet(ModelConfig(input_size=64, channels=[8, 16, 16, 16, 16], fc_widths=[32, 32]), 5)
    return net, torch.randn(6, 3, 64, 64)


def test_pool_feature_map_hand_cases():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert pool_feature_map(x, "max2x2").tolist() == [[5.0, 7.0, 13.0, 15.0]]
    assert pool_feature_map(x, "avg2x2").tolist() == [[2.5, 4.5, 10.5, 12.5]]
    assert pool_feature_map(x, "max").tolist() == [[15.0]]
    assert pool_feature_map(x, "avgmax").tolist() == [[7.5, 15.0]]
    assert pool_feature_map(x, "flatten").shape == (1, 16)
    # odd side 3 -> 2 cells, rows/cols 0-1 and 1-2 overlap on the middle one
    odd = torch.tensor([[[[1.0, 0.0, 2.0], [0.0, 9.0, 0.0], [3.0, 0.0, 4.0]]]])
    assert pool_feature_map(odd, "max2x2").tolist() == [[9.0, 9.0, 9.0, 9.0]]
    one = torch.full((2, 3, 1, 1), 7.0)  # smaller than the grid: repeated
    assert pool_feature_map(one, "max2x2").shape == (2, 12) and pool_feature_map(one, "max2x2").eq(7).all()
    vec = torch.randn(2, 5)
    assert pool_feature_map(vec, "max2x2") is vec  # fc6 / fc7 pass through
    with pytest.raises(ValueError, match="unknown pool"):
        pool_feature_map(x, "median")


def test_extract_features_matches_layer_outputs_in_eval_mode(tiny):
    net, images = tiny
    net.train()  # dropout would change fc7 between calls; extract_features must switch it off
    a = extract_features(net, [(images, torch.zeros(6))], ["conv1", "fc7"], pool="flatten")
    b = extract_features(net, [(images, torch.zeros(6))], ["conv1", "fc7"], pool="flatten")
    assert net.training and net.classifier.drop7.training  # the previous mode is restored
    assert torch.equal(a["fc7"], b["fc7"])
    net.eval()
    with torch.no_grad():
        ref = net.layer_outputs(images)
    net.train()
    torch.testing.assert_close(a["fc7"], ref["fc7"])
    torch.testing.assert_close(a["conv1"], ref["conv1"].flatten(1))  # (6, 8 * 15 * 15)


def test_extract_features_batch_size_invariant(tiny):
    net, images = tiny
    whole = extract_features(net, [images], ["conv2", "fc7"])
    parts = extract_features(net, [(images[:1],), (images[1:3],), (images[3:],)],
                             ["conv2", "fc7"])
    for name in whole:
        torch.testing.assert_close(parts[name], whole[name], atol=1e-5, rtol=1e-5)


def test_extract_features_unknown_layer(tiny):
    net, images = tiny
    with pytest.raises(KeyError, match="fc9"):
        extract_features(net, [images[:1]], ["fc9"])
