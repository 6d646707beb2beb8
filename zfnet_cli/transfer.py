"""Transfer of frozen ZFNet features (Zeiler & Fergus 2014, §5.2, Tables 4, 5, 7 and Fig 9).

The paper keeps layers 1-7 of the ImageNet-trained net fixed and trains a new classifier on
their output: a softmax on fc7 for Caltech-101 / 256 (Tables 4, 5, Fig 9), and a linear SVM or a
softmax on each layer 1..7 (Table 7). The metric is the mean per-class accuracy over 5 random
folds of N training images per class. This module is the core of that, with no file I/O:

* :func:`extract_features` -- one forward pass per batch, every requested layer as a vector;
* :func:`train_linear` -- a standardised linear **softmax** or one-vs-rest **SVM**;
* :func:`mean_per_class_accuracy` -- the Caltech metric;
* :func:`few_shot_eval` -- the fold runner (folds from :func:`zfnet_cli.data.caltech.few_shot_split`), on
  features computed once.

Choices the paper leaves UNSTATED, made here (each documented where it happens):

* how a conv layer's maps become a vector (default: max-pooling each map to a 2x2 grid,
  :func:`pool_feature_map`);
* the SVM's loss (squared hinge), the regularisation strength (``weight_decay``) and the
  optimiser (full-batch L-BFGS);
* feature standardisation with the training fold's mean and standard deviation.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from zfnet_cli.layers import read_layers

Indices = Union[torch.Tensor, Sequence[int]]

_GRID_POOL = re.compile(r"^(max|avg)(\d+)x(\d+)$")


def pool_feature_map(x: torch.Tensor, pool: str = "max2x2") -> torch.Tensor:
    """Turn a batch of conv feature maps into vectors.

    The paper does not say how its conv-layer features (Table 7, layers 1-5) were vectorised.
    The default, ``"max2x2"``, max-pools each map over the four quadrants of the image (D = 4C:
    384 for conv1 up to 1536 for conv3 / conv4, all below fc7's 4096), because

    * flattening (``"flatten"``) gives conv1 96 x 55 x 55 = 290,400 dimensions for 30 images per
      class (and 17 GB of float32 for Caltech-256 at 60 per class): far too many for a linear
      classifier on a few shots;
    * global pooling (``"max"``, ``"avg"``) throws away all layout, while Caltech objects sit
      roughly centred, so where a part fires carries information;
    * max rather than average because the rectified maps are sparse and max is the network's
      own pooling.

    Grids use ``F.adaptive_*_pool2d``: a side that the grid does not divide gets overlapping
    cells (13 -> 2 cells: rows 0-6 and 6-12); ZFNet's conv5 output (after pool5, 6 x 6) gives
    3 x 3 cells; a map smaller than the grid repeats its values (a 1 x 1 map gives its value
    g * g times), so D = C * g * g for every input size.

    Args:
        x (Tensor): (B, C, H, W) feature maps, or (B, D), which is returned as it is (fc6, fc7).
        pool (str, optional): one of ``"flatten"`` (D = C*H*W), ``"max"`` / ``"avg"`` (global,
            D = C), ``"avgmax"`` (global average then global max, D = 2C), ``"max{g}x{g}"`` /
            ``"avg{g}x{g}"`` (an adaptive g x g grid, D = C*g*g, ordered (C, gy, gx)).
            Default: ``"max2x2"``.

    Returns:
        Tensor: (B, D), same dtype and device as ``x``.

    Raises:
        ValueError: on an unknown ``pool`` or a tensor that is neither 2-D nor 4-D.

    Example:
        >>> x = torch.arange(16.0).view(1, 1, 4, 4)
        >>> pool_feature_map(x, "max2x2").tolist()
        [[5.0, 7.0, 13.0, 15.0]]
    """
    if x.dim() == 2:
        return x
    if x.dim() != 4:
        raise ValueError(f"expected (B, C, H, W) maps or (B, D) vectors, got {tuple(x.shape)}")
    if pool == "flatten":
        return x.flatten(1)
    if pool == "max":
        return x.amax(dim=(2, 3))
    if pool == "avg":
        return x.mean(dim=(2, 3))
    if pool == "avgmax":
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
    m = _GRID_POOL.match(pool)
    if m is None:
        raise ValueError(f"unknown pool {pool!r}; use 'flatten', 'max', 'avg', 'avgmax', "
                         f"'max{{g}}x{{g}}' or 'avg{{g}}x{{g}}' (e.g. 'max2x2')")
    kind, gy, gx = m.group(1), int(m.group(2)), int(m.group(3))
    fn = F.adaptive_max_pool2d if kind == "max" else F.adaptive_avg_pool2d
    return fn(x, (gy, gx)).flatten(1)  # (B, C * gy * gx)


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def extract_features(model: nn.Module, batches: Iterable, layers: Sequence[str], *,
                     pool: str = "max2x2", device: Optional[Union[str, torch.device]] = None,
                     progress: bool = False) -> dict[str, torch.Tensor]:
    """Frozen features of several layers at once (paper §5.2: "layers 1-7 ... kept fixed").

    Each batch takes one forward pass through ``model.layer_outputs``, which hands back every
    stage; the requested ones are vectorised (conv maps with :func:`pool_feature_map`, fc6 /
    fc7 as they are) and moved to the CPU as float32. The model is put in eval mode for the
    call (dropout off, so fc6 / fc7 are deterministic; each module's previous mode is restored
    after). Features are not standardised here: :func:`train_linear` does that with the
    training fold's statistics only.

    Args:
        model (nn.Module): a network with ``layer_outputs(x) -> {layer: tensor}``, such as
            :class:`~zfnet_cli.model.ZFNet` (``conv1`` .. ``conv5`` after their ReLU / pool /
            norm, ``fc6`` and ``fc7`` after their ReLU, ``fc8`` the logits), or any other
            model, whose layers are then read by module name
            (:func:`zfnet_cli.layers.read_layers`, e.g. ``_blocks.15`` of an EfficientNet).
        batches (iterable): yields (B, 3, H, W) float image batches, preprocessed the way the
            model expects; a tuple or list (e.g. a DataLoader's ``(images, labels)``) gives
            its first element.
        layers (sequence of str): the layers to keep, e.g. ``("conv5", "fc7")``; Table 7's
            layers 1..7 are ``conv1`` .. ``conv5``, ``fc6``, ``fc7``.
        pool (str, optional): how conv maps become vectors, see :func:`pool_feature_map`.
            Default: ``"max2x2"`` (D = 4C).
        device (str or torch.device, optional): where to run; the model is moved there.
            Default: the device of the model's parameters.
        progress (bool, optional): show a tqdm bar over batches. Default: False.

    Returns:
        dict[str, Tensor]: for each of ``layers``, an (N, D) float32 CPU tensor, rows in the
        order the batches came.

    Raises:
        KeyError: if a layer is not among the model's outputs (e.g. dropped by Table 3's
            variants).
        ValueError: if ``batches`` is empty.

    Example:
        >>> from zfnet_cli.model import ModelConfig, ZFNet
        >>> net = ZFNet(ModelConfig(input_size=64, channels=[8, 16, 16, 16, 16],
        ...                         fc_widths=[32, 32]), num_classes=5)
        >>> feats = extract_features(net, [torch.randn(2, 3, 64, 64)], ["conv1", "fc7"])
        >>> {k: tuple(v.shape) for k, v in feats.items()}  # conv1: 8 maps x 2 x 2 cells
        {'conv1': (2, 32), 'fc7': (2, 32)}
    """
    layers = list(layers)
    device = torch.device(device) if device is not None else _model_device(model)
    model.to(device)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    try:
        for batch in tqdm(batches, desc="features", disable=not progress, leave=False):
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            x = x.to(device, non_blocking=True)
            # our ZFNet hands back every stage; any other model is tapped at the named modules
            out = (model.layer_outputs(x) if hasattr(model, "layer_outputs") else
                   read_layers(model, x, layers))
            missing = [name for name in layers if name not in out]
            if missing:
                raise KeyError(f"layers {missing} not among the model's outputs {list(out)}")
            for name in layers:
                chunks[name].append(pool_feature_map(out[name], pool).float().cpu())
    finally:
        for m, mode in modes.items():
            m.train(mode)
    if not layers:
        return {}
    if not chunks[layers[0]]:
        raise ValueError("extract_features got no batches")
    return {name: torch.cat(parts) for name, parts in chunks.items()}


@dataclass
class LinearClassifier:
    """A linear classifier on standardised features: ``scores = ((x - mean) / std) @ weight.T
    + bias``.

    Attributes:
        mean: (D,) float32, the training features' mean.
        std: (D,) float32, their standard deviation (population), 1 where a feature is
            (nearly) constant on the training set.
        weight: (C, D) float32, in standardised units.
        bias: (C,) float32.
        loss: ``"softmax"`` or ``"hinge"``, the loss it was trained with.
    """

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    loss: str = "softmax"

    def standardize(self, features: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, D) float32, ``(x - mean) / std`` on the features' device."""
        x = features.float()
        if x.dim() != 2 or x.shape[1] != self.weight.shape[1]:
            raise ValueError(f"features must be (N, {self.weight.shape[1]}), "
                             f"got {tuple(features.shape)}")
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """(N, D) features -> (N, C) class scores (softmax logits, or the C one-vs-rest SVM
        decision values), on the features' device."""
        z = self.standardize(features)
        return z @ self.weight.to(z.device).T + self.bias.to(z.device)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """(N, D) features -> (N,) int64, the class with the highest score."""
        return self.scores(features).argmax(dim=1)


def _objective(scores: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor,
               loss: str, weight_decay: float) -> torch.Tensor:
    """Mean data loss + ``weight_decay / 2 * ||W||^2`` (the bias is not regularised).
    ``labels`` are (N,) class indices, or (N, C) 0/1 multi-hot targets (VOC, Table 6)."""
    multilabel = labels.dim() == 2
    if loss == "softmax":
        # Multi-label: the target distribution spreads evenly over the image's classes.
        data = F.cross_entropy(scores, labels / labels.sum(1, keepdim=True) if multilabel
                               else labels)
    else:
        # One-vs-rest: class c's SVM sees +1 for its own images and -1 for all others; the C
        # binary problems share nothing, so their summed objective trains them independently.
        if multilabel:
            y = 2.0 * labels - 1.0
        else:
            y = -torch.ones_like(scores)
            y.scatter_(1, labels[:, None], 1.0)
        data = F.relu(1.0 - y * scores).pow(2).sum(dim=1).mean()  # squared hinge
    return data + 0.5 * weight_decay * weight.pow(2).sum()


def train_linear(features_train: torch.Tensor, labels_train: torch.Tensor, num_classes: int,
                 *, loss: str = "softmax", weight_decay: float = 1e-3, epochs: int = 500,
                 lr: Optional[float] = None, batch_size: Optional[int] = None, seed: int = 0,
                 device: Optional[Union[str, torch.device]] = None) -> LinearClassifier:
    """Train a linear classifier on frozen features (paper §5.2: "a new softmax classifier on
    top"; Table 7: "linear SVM or softmax").

    Features are standardised with the training set's mean and (population) standard
    deviation; a feature whose standard deviation is below ``1e-6`` times the largest is only
    centred (a ReLU unit that never fires on the training images would otherwise be divided by
    zero; its weight stays 0 anyway, since only the L2 term pulls on it).

    The objective, minimised over ``W`` (C, D) and ``b`` (C,), is
    ``mean_i loss_i + weight_decay / 2 * ||W||^2`` with

    * ``"softmax"``: multinomial logistic regression, cross-entropy of ``softmax(W z + b)``;
    * ``"hinge"``: C one-vs-rest linear SVMs with the **squared** hinge, ``sum_c max(0, 1 -
      y_ic (w_c z + b_c))^2`` with ``y_ic = +1`` for class c and -1 otherwise (squared, as
      LIBLINEAR's default, so the objective is smooth and L-BFGS converges). An SVM with
      LIBLINEAR's cost C on N images equals ``weight_decay = 1 / (C * N)``.

    The paper states neither the regularisation nor the optimiser. The default is full-batch
    L-BFGS (strong-Wolfe line search, history 20, from zero weights; stops when the largest
    gradient entry is below 1e-6, the loss stops changing, or after ``epochs`` iterations). It
    is deterministic and ignores ``seed``. Measured on one CPU thread with D = 4096: the
    softmax converges in 20-40 function evaluations (0.2 s for 10 classes x 30 shots, 1.5 s for
    50 x 30); the squared hinge, nearly a hard-margin SVM when N << D and ``weight_decay`` is
    small, needs hundreds of iterations (5 s for 10 x 30, 30 s for 50 x 30 with the 500-iteration
    cap; fewer with a larger ``weight_decay``, e.g. 0.6 s at 1.0), with test accuracy already
    flat well before the cap. With ``batch_size`` set, Adam on shuffled mini-batches is used
    instead (for feature sets too large for one batch); ``seed`` then fixes the shuffling.

    Args:
        features_train (Tensor): (N, D) float features.
        labels_train (Tensor): (N,) int64 labels in ``[0, num_classes)``, or (N, C) 0/1
            multi-hot targets (PASCAL VOC, Table 6): the softmax then fits the target
            distribution spread evenly over each image's classes (the paper's "20-way softmax"),
            the SVM's class c sees +1 where the target is 1. Rows must have a positive with the
            softmax.
        num_classes (int): C, the number of outputs (a class absent from the training set
            gets a row whose bias is pushed down, so it is rarely predicted).
        loss (str, optional): ``"softmax"`` or ``"hinge"``. Default: ``"softmax"``.
        weight_decay (float, optional): L2 strength on ``W`` in standardised units, per mean
            loss (so independent of N). UNSTATED in the paper; ``1e-3`` is close to the
            common LIBLINEAR / sklearn ``C = 1`` for ~1000 training images. Default: 1e-3.
        epochs (int, optional): L-BFGS iterations at most (full batch), or Adam epochs.
            Default: 500.
        lr (float, optional): L-BFGS step scale (1.0 with the line search) or Adam's learning
            rate. Default: 1.0 for L-BFGS, 1e-2 for Adam.
        batch_size (int, optional): None for full-batch L-BFGS; a size for Adam mini-batches.
            Default: None.
        seed (int, optional): mini-batch shuffling seed (Adam only). Default: 0.
        device (str or torch.device, optional): where to train. Default: the features' device.

    Returns:
        LinearClassifier: the fitted classifier, its tensors on the CPU.

    Raises:
        ValueError: on an unknown loss, mismatched shapes or labels out of range.

    Example:
        >>> x = torch.tensor([[0.0], [4.0]]); y = torch.tensor([0, 1])
        >>> clf = train_linear(x, y, 2, loss="hinge", weight_decay=0.5)
        >>> clf.predict(torch.tensor([[1.9], [2.1]])).tolist()
        [0, 1]
    """
    if loss not in ("softmax", "hinge"):
        raise ValueError(f"loss must be 'softmax' or 'hinge', got {loss!r}")
    multilabel = labels_train.dim() == 2
    if features_train.dim() != 2 or labels_train.shape[:1] != features_train.shape[:1] or (
            multilabel and labels_train.shape[1] != num_classes):
        raise ValueError(f"features (N, D) and labels (N,) or (N, {num_classes}) must match, got "
                         f"{tuple(features_train.shape)} and {tuple(labels_train.shape)}")
    if len(labels_train) == 0:
        raise ValueError("no training images")
    if multilabel and ((labels_train != 0) & (labels_train != 1)).any():
        raise ValueError("multi-label targets must be 0 / 1")
    if multilabel and loss == "softmax" and (labels_train.sum(1) == 0).any():
        raise ValueError("multi-label softmax: every training image needs a positive class")
    if not multilabel and (int(labels_train.min()) < 0 or int(labels_train.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got "
                         f"[{int(labels_train.min())}, {int(labels_train.max())}]")
    device = torch.device(device) if device is not None else features_train.device
    x = features_train.to(device, torch.float32)
    y = labels_train.to(device, torch.float32 if multilabel else torch.long)

    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False)
    std = torch.where(std > 1e-6 * std.max().clamp_min(1e-30), std, torch.ones_like(std))
    z = (x - mean) / std  # (N, D)

    with torch.enable_grad():  # also when called under torch.no_grad()
        weight, bias = _fit(z, y, num_classes, loss, weight_decay, epochs, lr, batch_size, seed)
    return LinearClassifier(mean.cpu(), std.cpu(), weight.detach().cpu(), bias.detach().cpu(),
                            loss)


def _fit(z: torch.Tensor, y: torch.Tensor, num_classes: int, loss: str, weight_decay: float,
         epochs: int, lr: Optional[float], batch_size: Optional[int], seed: int
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise :func:`_objective` over (W, b) from zero on standardised features ``z``."""
    device = z.device
    weight = torch.zeros(num_classes, z.shape[1], device=device, requires_grad=True)  # (C, D)
    bias = torch.zeros(num_classes, device=device, requires_grad=True)  # (C,)
    if batch_size is None:
        opt = torch.optim.LBFGS([weight, bias], lr=1.0 if lr is None else lr, max_iter=epochs,
                                history_size=20, tolerance_grad=1e-6, tolerance_change=1e-10,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            obj = _objective(z @ weight.T + bias, y, weight, loss, weight_decay)
            obj.backward()
            return obj

        opt.step(closure)  # one call runs up to max_iter iterations
    else:
        opt = torch.optim.Adam([weight, bias], lr=1e-2 if lr is None else lr)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            for idx in torch.randperm(len(z), generator=gen).split(batch_size):
                idx = idx.to(device)
                opt.zero_grad()
                _objective(z[idx] @ weight.T + bias, y[idx], weight, loss,
                           weight_decay).backward()
                opt.step()
    return weight, bias


def mean_per_class_accuracy(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """The paper's Caltech metric (§5.2): the accuracy of each class, averaged over classes,
    in percent. Classes with no image in ``labels`` are left out of the average.

    Unlike the plain accuracy it weighs every class equally, however many test images it has
    (Caltech-101 tests on up to 50 per class, so small classes would otherwise count less).

    Args:
        pred (Tensor): (N,) int predicted classes.
        labels (Tensor): (N,) int true classes in ``[0, num_classes)``.
        num_classes (int): C.

    Returns:
        float: in [0, 100].

    Example:
        >>> pred = torch.tensor([0, 0, 0, 0, 1]); labels = torch.tensor([0, 0, 0, 1, 1])
        >>> mean_per_class_accuracy(pred, labels, 2)  # (3/3 + 1/2) / 2; plain accuracy is 80
        75.0
    """
    if pred.shape != labels.shape or pred.dim() != 1:
        raise ValueError(f"pred and labels must both be (N,), got {tuple(pred.shape)} and "
                         f"{tuple(labels.shape)}")
    labels = labels.long().cpu()
    hit = (pred.long().cpu() == labels).double()
    total = torch.bincount(labels, minlength=num_classes).double()  # (C,) images per class
    correct = torch.bincount(labels, weights=hit, minlength=num_classes)  # (C,)
    present = total > 0
    if not present.any():
        raise ValueError("labels is empty")
    return float((correct[present] / total[present]).mean() * 100.0)


def few_shot_eval(features: torch.Tensor, labels: torch.Tensor,
                  splits: Sequence[tuple[Indices, Indices]], num_classes: int,
                  **train_kw) -> dict:
    """Train and test a linear classifier on each fold of precomputed features (paper §5.2:
    Tables 4, 5, 7 and Fig 9 report the mean per-class accuracy over 5 random folds).

    The features are computed once (the network is frozen) and indexed per fold, so a fold
    costs one :func:`train_linear` fit. Fold ``f`` trains with ``seed = seed + f``.

    Args:
        features (Tensor): (N, D) features of every image (e.g. from
            :func:`extract_features`).
        labels (Tensor): (N,) int64 classes.
        splits (sequence of (train_idx, test_idx)): index tensors or lists into ``features``,
            e.g. from :func:`zfnet_cli.data.caltech.few_shot_split`.
        num_classes (int): C.
        **train_kw: passed to :func:`train_linear` (``loss``, ``weight_decay``, ``epochs``,
            ``lr``, ``batch_size``, ``seed``, ``device``).

    Returns:
        dict: ``accuracies`` (list of float, mean per-class accuracy in % per fold), ``mean``
        and ``std`` over folds (the sample standard deviation, ddof = 1; 0 for one fold: the
        paper's "±" is not defined further), ``folds`` (int), ``fit_seconds`` (list of float).

    Example:
        >>> x = torch.tensor([[0.0], [1.0], [10.0], [11.0]]); y = torch.tensor([0, 0, 1, 1])
        >>> r = few_shot_eval(x, y, [([0, 2], [1, 3]), ([1, 3], [0, 2])], 2, loss="hinge")
        >>> r["accuracies"], r["mean"], r["std"]
        ([100.0, 100.0], 100.0, 0.0)
    """
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"features (N, D) and labels (N,) must match, got "
                         f"{tuple(features.shape)} and {tuple(labels.shape)}")
    if not splits:
        raise ValueError("few_shot_eval needs at least one split")
    seed = train_kw.pop("seed", 0)
    accs, secs = [], []
    for f, (train_idx, test_idx) in enumerate(splits):
        tr = torch.as_tensor(train_idx, dtype=torch.long)
        te = torch.as_tensor(test_idx, dtype=torch.long)
        t0 = time.perf_counter()
        clf = train_linear(features[tr], labels[tr], num_classes, seed=seed + f, **train_kw)
        secs.append(time.perf_counter() - t0)
        accs.append(mean_per_class_accuracy(clf.predict(features[te]).cpu(), labels[te],
                                            num_classes))
    return {**fold_summary(accs), "folds": len(accs), "fit_seconds": secs}


def fold_summary(accuracies: Sequence[float]) -> dict:
    """``accuracies`` (one per fold), their ``mean`` and ``std``: the sample standard deviation
    (ddof = 1), 0 for one fold (the paper's "±" is not defined further)."""
    accs = list(accuracies)
    mean = sum(accs) / len(accs)
    std = math.sqrt(sum((a - mean) ** 2 for a in accs) / (len(accs) - 1)) if len(accs) > 1 else 0.0
    return {"accuracies": accs, "mean": mean, "std": std}
