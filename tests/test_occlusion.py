"""Occlusion sensitivity (paper §4.2, Fig 7): hand-computed cases, batch-size invariance and an
independent one-position-at-a-time loop."""
import functools
import math
from collections import OrderedDict

import pytest
import torch
from torch import nn
from torchvision.models import alexnet

from zfnet_cli.model import ModelConfig, ZFNet
from zfnet_cli.occlusion import occlude, occluder_positions


# --- occluder positions ----------------------------------------------------------------------

def test_positions_hand_case():
    pos = occluder_positions(10, 10, size=4, stride=3)  # 10 - 4 = 6 = 2 * 3: no flush needed
    expected = [(y, x) for y in (0, 3, 6) for x in (0, 3, 6)]  # row-major
    assert pos.dtype == torch.long
    assert pos.tolist() == [list(p) for p in expected]


def test_positions_flush_with_far_edge():
    # stride 4 stops at 4; a last start 10 - 4 = 6 is added so pixels 8, 9 get covered
    pos = occluder_positions(6, 10, size=4, stride=4)
    assert pos.tolist() == [[y, x] for y in (0, 2) for x in (0, 4, 6)]
    assert occluder_positions(5, 5, size=5, stride=2).tolist() == [[0, 0]]
    assert occluder_positions(3, 3, size=1, stride=1).shape == (9, 2)


# --- a hand-set network whose maps are literal numbers ---------------------------------------

class Tiny(nn.Module):
    """conv1 (1x1): map0 = red, map1 = green + blue; relu1; logits from the two map totals:
    class0 = t0 / 8, class1 = t1 / 8 + 6, class2 = 10 (all exact in float32)."""

    def __init__(self):
        super().__init__()
        conv = nn.Conv2d(3, 2, 1)
        head = nn.Linear(2, 3)
        with torch.no_grad():
            conv.weight.copy_(torch.tensor([[1., 0., 0.], [0., 1., 1.]]).view(2, 3, 1, 1))
            conv.bias.zero_()
            head.weight.copy_(torch.tensor([[0.125, 0.], [0., 0.125], [0., 0.]]))
            head.bias.copy_(torch.tensor([0., 6., 10.]))
        self.features = nn.Sequential(OrderedDict(conv1=conv, relu1=nn.ReLU()))
        self.classifier = head

    def forward(self, x):
        return self.classifier(self.features(x).sum(dim=(2, 3)))


def tiny_image():
    red = torch.arange(16.).view(4, 4)  # total 120; 2x2 blocks sum to 10, 18, 42, 50
    return torch.stack([red, torch.ones(4, 4), torch.full((4, 4), 2.)])  # map1 total 16 * 3 = 48


def softmax_of(logits):
    """Independent softmax, from the logits' literal formula."""
    e = [math.exp(v) for v in logits]
    return [v / sum(e) for v in e]


def tiny_logits(t0, t1):
    return [t0 / 8, t1 / 8 + 6, 10.0]


def test_tiny_network_by_hand():
    maps = occlude(Tiny(), tiny_image(), size=2, stride=2)
    assert maps.grid == (2, 2) and maps.layer == "conv1"
    assert maps.positions.tolist() == [[0, 0], [0, 2], [2, 0], [2, 2]]
    assert maps.fmap == 0  # red: total 120 > 48
    assert maps.clean_fmap_total == 120.0
    # fill 0 removes the covered red pixels (and 2x2 x (1 + 2) = 12 of map1's 48)
    assert torch.equal(maps.fmap_total, torch.tensor([[120. - 10, 120. - 18],
                                                      [120. - 42, 120. - 50]]))
    # logits: clean (15, 12, 10); occluded (13.75 | 12.75 | 9.75 | 8.75, 10.5, 10)
    assert maps.clean_label == 0 and maps.target == 0
    assert torch.equal(maps.top_label, torch.tensor([[0, 0], [1, 1]]))
    expected = [softmax_of(tiny_logits(t0, 36.))[0] for t0 in (110., 102., 78., 70.)]
    assert torch.allclose(maps.p_target, torch.tensor(expected).view(2, 2), rtol=1e-6)
    assert maps.clean_p_target == pytest.approx(softmax_of(tiny_logits(120., 48.))[0], rel=1e-6)
    assert torch.allclose(maps.clean_probs, torch.tensor(softmax_of(tiny_logits(120., 48.))))
    assert torch.equal(maps.centers(), torch.tensor([[[0.5, 0.5], [0.5, 2.5]],
                                                     [[2.5, 0.5], [2.5, 2.5]]],
                                                    dtype=torch.float64))


def test_tiny_network_explicit_target_and_colour_fill():
    # fill (0, 1, 2) per channel: green and blue already are 1 and 2, so map1 stays 48
    fill = torch.tensor([0., 1., 2.]).view(3, 1, 1)
    maps = occlude(Tiny(), tiny_image(), size=2, stride=2, fill=fill, target=2, batch_size=3)
    assert maps.target == 2 and maps.clean_label == 0
    assert torch.equal(maps.fmap_total, torch.tensor([[110., 102.], [78., 70.]]))
    expected = [softmax_of(tiny_logits(t0, 48.))[2] for t0 in (110., 102., 78., 70.)]
    assert torch.allclose(maps.p_target, torch.tensor(expected).view(2, 2), rtol=1e-6)
    # class0 = 13.75, 12.75 (> 12) then 9.75, 8.75 (< class1 = 12)
    assert torch.equal(maps.top_label, torch.tensor([[0, 0], [1, 1]]))
    # a float fill: the covered red pixels become 3 each (+12 per square)
    maps = occlude(Tiny(), tiny_image(), size=2, stride=2, fill=3.0)
    assert torch.equal(maps.fmap_total, torch.tensor([[122., 114.], [90., 82.]]))


# --- real architectures: exact, batch-size invariant, equal to a plain loop ------------------
# BLAS / oneDNN choose kernels by batch shape (a Linear with 1-3 rows sums in another order than
# one with 64), so float32 maps differ across batch sizes in the last bits. To test *our* batching
# exactly, make every sum exact: float64, weights +-2^-s with 2^s ~ sqrt(fan-in), zero biases and
# an integer image; then any summation order gives the same bits and torch.equal is meaningful.

def make_exact(net):
    net.double()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                s = round(math.log2(m.weight[0].numel()) / 2)
                m.weight.copy_(torch.where(m.weight >= 0, 1.0, -1.0) * 2.0 ** -s)
                m.bias.zero_()
    return net


def small_zfnet(**kw):
    torch.manual_seed(0)
    cfg = ModelConfig(input_size=64, channels=[8, 16, 16, 16, 16], fc_widths=[32, 32], **kw)
    return ZFNet(cfg, num_classes=5)


@functools.lru_cache(maxsize=1)
def exact_alexnet():
    """One exact torchvision AlexNet for the tests below. fc6 / fc7 are narrowed from 4096 to
    64 (a float64 fc6 is 300 MB to read per forward on 2 cores); the forward under test
    (features, avgpool, flatten, classifier; in-place ReLUs; dropout) is torchvision's own."""
    torch.manual_seed(0)
    net = alexnet(weights=None, num_classes=7)
    net.classifier[1], net.classifier[4], net.classifier[6] = (
        nn.Linear(256 * 6 * 6, 64), nn.Linear(64, 64), nn.Linear(64, 7))
    return make_exact(net)


def starts(n, size, stride):
    """Occluder starts along one axis, written independently of occluder_positions."""
    out = []
    y = 0
    while y + size <= n:
        out.append(y)
        y += stride
    if out[-1] + size < n:
        out.append(n - size)
    return out


def loop_maps(net, run, image, size, stride, fill):
    """Fig 7 (b), (d), (e) one occluder position at a time, with plain slicing; ``run(net, x)``
    gives (the layer's output, the logits) without hooks."""
    net.eval()
    with torch.no_grad():
        act, logits = run(net, image[None])
        fmap = int(act[0].sum(dim=(1, 2)).argmax())
        target = int(logits[0].argmax())
        rows = []
        for y in starts(image.shape[1], size, stride):
            row = []
            for x in starts(image.shape[2], size, stride):
                occluded = image.clone()
                occluded[:, y:y + size, x:x + size] = fill.expand_as(image)[:, y:y + size,
                                                                            x:x + size]
                act, logits = run(net, occluded[None])
                row.append((act[0, fmap].sum(), torch.softmax(logits[0], 0)[target],
                            logits[0].argmax()))
            rows.append(row)
    grid = [[torch.stack(v) for v in zip(*row)] for row in rows]
    return fmap, target, [torch.stack([r[k] for r in grid]) for k in range(3)]


def zfnet_conv5(net, x):
    out = net.layer_outputs(x)  # conv5 = after pool5
    return out["conv5"], out["fc8"]


def alexnet_upto(end):
    """torchvision AlexNet's forward written out, reading the output of ``features[:end]``."""
    def run(net, x):
        act = net.features[:end](x)
        top = net.features[end:](act)  # starts with a conv (or is empty): act is not overwritten
        return act, net.classifier(torch.flatten(net.avgpool(top), 1))
    return run


NETS = {  # name: (build, run without hooks, layer, occluder size, stride, grid)
    # ZFNet's conv5 = post-pool5 (layer_outputs); LRN is off because its x / (k + a S)^b is
    # never exact (the float32 test below keeps it). Starts 0, 20, then 36 (flush).
    "zfnet": (lambda: make_exact(small_zfnet(lrn=False, init="kaiming")), zfnet_conv5, None,
              28, 20, (3, 3)),
    # torchvision AlexNet at 64 px: features end 256 x 1 x 1, avgpool repeats it to 6 x 6;
    # its ReLUs are in place. layer2 = the output of features[3:6] (conv, relu, pool).
    "alexnet": (exact_alexnet, alexnet_upto(6), "conv2", 28, 20, (3, 3)),
}


@pytest.mark.parametrize("name", list(NETS))
def test_batch_size_invariance_and_plain_loop(name):
    build, run, layer, size, stride, grid = NETS[name]
    net = build().train()  # occlude must switch to eval (dropout) by itself
    torch.manual_seed(1)
    image = torch.randint(-3, 4, (3, 64, 64)).double()
    fill = torch.tensor([0.5, -1.0, 0.25], dtype=torch.float64).view(3, 1, 1)
    runs = [occlude(net, image, size=size, stride=stride, fill=fill, layer=layer, batch_size=b,
                    progress=(b == 3)) for b in (1, 3, 64)]
    assert net.training and all(m.training for m in net.modules())  # mode restored
    fmap, target, (total, p, label) = loop_maps(net, run, image, size, stride, fill)
    for maps in runs:
        assert maps.grid == grid and maps.fmap == fmap and maps.target == target
        assert torch.equal(maps.fmap_total, total)
        assert torch.equal(maps.p_target, p)
        assert torch.equal(maps.top_label, label)
    assert runs[0].layer == (layer or "conv5")
    assert len(set(total.flatten().tolist())) > 1  # the occluder does move the maps
    assert len(set(p.flatten().tolist())) > 1


def test_alexnet_default_layer_is_the_features_output():
    # the paper's "layer 5": torchvision's features end at pool5; forward then runs avgpool
    net = exact_alexnet()
    image = torch.randint(-3, 4, (3, 64, 64), generator=torch.Generator().manual_seed(3)).double()
    fill = torch.tensor(0.5, dtype=torch.float64)
    maps = occlude(net, image, size=32, stride=32, fill=0.5, batch_size=4)
    fmap, target, (total, p, label) = loop_maps(net, alexnet_upto(13), image, 32, 32, fill)
    assert maps.layer == "conv5" and maps.fmap == fmap and maps.target == target
    assert torch.equal(maps.fmap_total, total) and torch.equal(maps.p_target, p)
    assert torch.equal(maps.top_label, label)


def test_fill_equal_to_image_changes_nothing():
    net = make_exact(small_zfnet(lrn=False, init="kaiming"))
    image = torch.randint(-3, 4, (3, 64, 64)).double()
    maps = occlude(net, image, size=16, stride=24, fill=image, batch_size=5)  # 3 x 3
    assert torch.equal(maps.fmap_total, torch.full(maps.grid, maps.clean_fmap_total,
                                                   dtype=torch.float64))
    assert torch.equal(maps.p_target, torch.full(maps.grid, maps.clean_p_target,
                                                 dtype=torch.float64))
    assert torch.equal(maps.top_label, torch.full(maps.grid, maps.clean_label))
    maps = occlude(Tiny(), tiny_image(), size=2, stride=1, fill=tiny_image())
    assert torch.equal(maps.fmap_total, torch.full((3, 3), 120.))


def test_float32_zfnet_with_lrn_close_across_batch_sizes():
    net = small_zfnet(init="kaiming")  # the real float32 model, LRN on
    image = torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(2))
    a, b = (occlude(net, image, size=32, stride=32, batch_size=n) for n in (1, 64))
    assert a.fmap == b.fmap and a.target == b.target
    assert torch.allclose(a.fmap_total, b.fmap_total, rtol=1e-5, atol=1e-6)
    assert torch.allclose(a.p_target, b.p_target, rtol=1e-5, atol=1e-7)


def test_mixed_modes_restored():
    net = small_zfnet()
    net.eval()
    net.classifier.train()
    occlude(net, torch.randn(3, 64, 64), size=32, stride=32)
    assert not net.training and not net.features.training
    assert net.classifier.training and net.classifier.drop6.training


# --- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("image, kwargs, match", [
    (torch.zeros(3, 4, 4), dict(size=5, stride=1), "size 5 is larger than the 4x4"),
    (torch.zeros(3, 4, 6), dict(size=0, stride=1), "size must be >= 1, got 0"),
    (torch.zeros(3, 4, 4), dict(size=2, stride=0), "stride must be >= 1, got 0"),
    (torch.zeros(1, 3, 4, 4), dict(size=2, stride=2), r"\(3, H, W\), got \(1, 3, 4, 4\)"),
    (torch.zeros(1, 4, 4), dict(size=2, stride=2), r"\(3, H, W\), got \(1, 4, 4\)"),
    (torch.zeros(3, 4, 4), dict(size=2, stride=2, target=3), "target 3 .* 3 classes"),
    (torch.zeros(3, 4, 4), dict(size=2, stride=2, target=-1), "target -1 .* 3 classes"),
    (torch.zeros(3, 4, 4), dict(size=2, stride=2, layer="conv5"), r"'conv5'.*\['conv1'\]"),
    (torch.zeros(3, 4, 4), dict(size=2, stride=2, batch_size=0), "batch_size .* got 0"),
    (torch.zeros(3, 4, 4), dict(size=2, stride=2, fill=torch.zeros(3)), r"got shape \(3,\)"),
])
def test_errors(image, kwargs, match):
    with pytest.raises(ValueError, match=match):
        occlude(Tiny(), image, **kwargs)
