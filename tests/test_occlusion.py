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
from zfnet_cli.occlusion import occlude, occluder_positions, resample


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
    # its ReLUs are in place. conv2 = the output of features[3:6] (conv, relu, pool).
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
    assert maps.layer == "conv5" and maps.module_name == "features.12" and maps.fmap == fmap and maps.target == target
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
    (torch.zeros(2, 4, 4, 4), dict(size=2, stride=2), r"\(N, 3, H, W\), got \(2, 4, 4, 4\)"),
    (torch.zeros(1, 4, 4), dict(size=2, stride=2), r"\(3, H, W\) or .*got \(1, 4, 4\)"),
    (torch.zeros(2, 3, 4, 4), dict(size=2, stride=2, target=[1]), "1 targets for 2 images"),
    (torch.zeros(3, 4, 4), dict(size=2, stride=2, target=3), "target 3 .* 3 classes"),
    (torch.zeros(3, 4, 4), dict(size=2, stride=2, target=-1), "target -1 .* 3 classes"),
    (torch.zeros(3, 4, 4), dict(size=2, stride=2, layer="conv5"), r"'conv5'; did you mean conv1"),
    (torch.zeros(3, 4, 4), dict(size=2, stride=2, batch_size=0), "batch_size .* got 0"),
    (torch.zeros(3, 4, 4), dict(size=2, stride=2, fill=torch.zeros(3)), r"got shape \(3,\)"),
])
def test_errors(image, kwargs, match):
    with pytest.raises(ValueError, match=match):
        occlude(Tiny(), image, **kwargs)


# --- any image classifier: torchvision's own nets and a user's nn.Sequential -----------------
# Random float64 weights (not exact sums): the batched maps must equal a plain loop that pastes
# the occluder into a copy of the image and runs the model, to float64 rounding. The loop reads
# the layer by writing each forward out (no hooks), so it is independent of zfnet's layer tap.

def _randomise_bn(net):
    """Non-trivial eval-mode batch norms (torchvision starts them at mean 0, var 1)."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return net.double()


def tv_resnet18():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    return _randomise_bn(resnet18(num_classes=7))


def run_resnet18(net, x):  # torchvision's ResNet._forward_impl, read at layer4
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    act = net.layer4(net.layer3(net.layer2(net.layer1(x))))
    return act, net.fc(torch.flatten(net.avgpool(act), 1))


@functools.lru_cache(maxsize=1)
def tv_vgg11_bn():
    """vgg11_bn with fc6 / fc7 narrowed from 4096 to 32 (a float64 fc6 is 800 MB). Built on
    the meta device and given fresh weights after narrowing: initialising the 100M-weight fc6
    first would take seconds."""
    from torchvision.models import vgg11_bn

    with torch.device("meta"):
        net = vgg11_bn(num_classes=7)
        net.classifier[0], net.classifier[3], net.classifier[6] = (
            nn.Linear(512 * 7 * 7, 32), nn.Linear(32, 32), nn.Linear(32, 7))
    net = net.to_empty(device="cpu")
    torch.manual_seed(0)
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
            m.reset_parameters()
    return _randomise_bn(net)


def run_features_then_head(net, x):  # VGG / MobileNetV3: features, avgpool, flatten, classifier
    act = net.features(x)
    return act, net.classifier(torch.flatten(net.avgpool(act), 1))


def tv_mobilenet_v3_small():
    from torchvision.models import mobilenet_v3_small

    torch.manual_seed(0)
    return _randomise_bn(mobilenet_v3_small(num_classes=7))


def user_sequential():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 5, stride=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 13 * 13, 5)
                         ).double()


def run_sequential(net, x):  # the last 4-D output before Flatten: module "4"
    act = net[:5](x)
    return act, net[5:](act)


ANY = {  # name: (build, plain forward, default layer name, its module, image side, size, stride)
    # 64 px: layer4 / features end 2x2; starts 0, 20, 40. VGG at 32 px (its features end 1x1,
    # avgpool repeats them to 7x7) to stay fast: starts 0, 10, 20.
    "resnet18": (tv_resnet18, run_resnet18, "layer4", "layer4", 64, 24, 20),
    "vgg11_bn": (tv_vgg11_bn, run_features_then_head, "conv8", "features.28", 32, 12, 10),
    "mobilenet_v3_small": (tv_mobilenet_v3_small, run_features_then_head, "features", "features",
                           64, 24, 20),
    "sequential": (user_sequential, run_sequential, "4", "4", 64, 24, 20),
}


@pytest.mark.parametrize("name", list(ANY))
def test_any_classifier_equals_a_plain_loop(name):
    build, run, layer, module, side, size, stride = ANY[name]
    net = build().train()
    image = torch.randn(3, side, side, generator=torch.Generator().manual_seed(4),
                        dtype=torch.float64)
    fill = torch.tensor([0.5, -1.0, 0.25], dtype=torch.float64).view(3, 1, 1)
    maps = occlude(net, image, size=size, stride=stride, fill=fill, batch_size=4)
    assert net.training  # modes restored
    assert maps.layer == layer and maps.module_name == module and maps.grid == (3, 3)
    fmap, target, (total, p, label) = loop_maps(net, run, image, size, stride, fill)
    assert maps.fmap == fmap and maps.target == target
    assert torch.allclose(maps.fmap_total, total, rtol=1e-10, atol=1e-12)
    assert torch.allclose(maps.p_target, p, rtol=1e-10, atol=1e-15)
    assert torch.equal(maps.top_label, label)
    assert len(set(total.flatten().tolist())) > 1 and len(set(p.flatten().tolist())) > 1


def test_a_batch_of_images_gives_one_result_each_as_single_calls():
    net = tv_mobilenet_v3_small()
    images = torch.randn(3, 3, 48, 48, generator=torch.Generator().manual_seed(6),
                         dtype=torch.float64)
    several = occlude(net, images, size=24, stride=12, target=[2, None, 5], batch_size=5)
    assert isinstance(several, list) and len(several) == 3
    for image, t, maps in zip(images, [2, None, 5], several):
        one = occlude(net, image, size=24, stride=12, target=t)
        assert maps.target == one.target and maps.fmap == one.fmap
        assert torch.allclose(maps.p_target, one.p_target, rtol=1e-10, atol=1e-15)
        assert torch.allclose(maps.fmap_total, one.fmap_total, rtol=1e-10, atol=1e-12)
    assert several[1].target == several[1].clean_label
    assert [m.target for m in occlude(net, images[:2], size=48, stride=1, target=4)] == [4, 4]


def test_layer_by_module_name_and_a_fully_connected_layer():
    net = tv_vgg11_bn()
    image = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    by_paper = occlude(net, image, size=16, stride=16, layer="conv8")
    by_module = occlude(net, image, size=16, stride=16, layer="features.28")
    assert torch.equal(by_paper.fmap_total, by_module.fmap_total)
    assert by_module.layer == "features.28" and by_paper.module_name == "features.28"
    fc7 = occlude(net, image, size=16, stride=16, layer="fc7")  # (B, 32): one unit per "map"
    with torch.no_grad():
        net.eval()
        units = net.classifier[:5](torch.flatten(net.avgpool(net.features(image[None])), 1))
    assert fc7.module_name == "classifier.4" and fc7.fmap == int(units[0].argmax())
    with pytest.raises(ValueError, match=r"unknown layer 'layer9'.*zfnet layers"):
        occlude(tv_resnet18(), image, size=16, stride=16, layer="layer9")
    with pytest.raises(ValueError, match=r"runs 2 times .* read the module that encloses it"):
        occlude(tv_resnet18(), image, size=16, stride=16, layer="layer1.0.relu")


def test_model_that_does_not_return_logits_is_one_line():
    with pytest.raises(ValueError, match=r"must return \(B, classes\) logits; it returned "
                                         r"\(1, 2, 4, 4\)"):
        occlude(nn.Sequential(nn.Conv2d(3, 2, 1)), torch.zeros(3, 4, 4), size=2, stride=2,
                layer="0")


# --- maps at the input's size ----------------------------------------------------------------

def test_resampled_maps_mean_over_covering_positions_by_hand():
    # 1 x 6 strip, size 4 stride 2: positions x = 0, 2; pixels 0-1 under the first only,
    # 2-3 under both (mean), 4-5 under the second only
    pos = occluder_positions(4, 6, size=4, stride=2)
    assert pos.tolist() == [[0, 0], [0, 2]]
    out = resample(torch.tensor([[1.0, 3.0]]), pos, (1, 2), 4, (4, 6))
    assert out.shape == (4, 6) and out[0].tolist() == [1, 1, 2, 2, 3, 3]
    labels = resample(torch.tensor([[7, 9]]), pos, (1, 2), 4, (4, 6), how="nearest")
    # centres at x = 1.5 and 3.5: pixel 2 is nearer 1.5, pixel 3 nearer 3.5
    assert labels[0].tolist() == [7, 7, 7, 9, 9, 9] and labels.dtype == torch.int64


def test_resampled_equals_a_pixel_loop_and_boxes_state_the_pixels():
    maps = occlude(Tiny(), torch.randn(3, 11, 9, generator=torch.Generator().manual_seed(8)),
                   size=4, stride=3)  # rows 0, 3, 6, 7 (flush); cols 0, 3, 5 (flush)
    boxes = maps.boxes()
    assert boxes.shape == (4, 3, 4) and boxes[3, 2].tolist() == [7, 5, 11, 9]
    full = maps.resampled()
    for key in ("fmap_total", "p_target", "log_p_target"):
        expect = torch.empty(11, 9, dtype=torch.float64)
        for i in range(11):
            for j in range(9):
                cover = [getattr(maps, key)[a, b].item() for a in range(4) for b in range(3)
                         if boxes[a, b, 0] <= i < boxes[a, b, 2] and boxes[a, b, 1] <= j < boxes[a, b, 3]]
                expect[i, j] = sum(cover) / len(cover)
        assert full[key].shape == (11, 9)
        assert torch.allclose(full[key].double(), expect, rtol=1e-6, atol=1e-6), key
    assert full["top_label"].dtype == torch.int64 and full["top_label"].shape == (11, 9)


# --- the Fig 7 row for notebooks -------------------------------------------------------------

def test_plot_fig7_returns_a_figure_and_saves_a_png(tmp_path):
    from matplotlib.figure import Figure

    from zfnet_cli.occlusion import plot_fig7

    net = user_sequential()
    x = torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    maps = occlude(net, x, size=16, stride=8)
    fig = plot_fig7(maps, x, classes=list("abcde"), path=tmp_path / "fig7.png", title="t")
    assert isinstance(fig, Figure)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:2] == ["(a) input, occluder at its most\ndamaging position (lowest p)",
                          f"(b) total activation, 4 map {maps.fmap}"]
    assert "(c) projection" not in " ".join(titles)  # no projection given: no panel (c)
    assert any(t.startswith("(f) fall in p(") for t in titles)
    assert (tmp_path / "fig7.png").stat().st_size > 5000
    with_c = plot_fig7(maps, x.permute(1, 2, 0).numpy(), projection=torch.randn(3, 64, 64))
    assert any(ax.get_title().startswith("(c) projection") for ax in with_c.axes)
    with pytest.raises(ValueError, match=r"the occluded \(3, 64, 64\) image"):
        plot_fig7(maps, torch.zeros(3, 32, 32))


def test_importing_occlusion_loads_no_plotting_or_cli_machinery():
    import subprocess
    import sys

    code = ("import sys, zfnet_cli.occlusion, zfnet_cli.layers, zfnet_cli.data.images; "
            "print([m for m in ('matplotlib', 'typer', 'hydra', 'omegaconf') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_torchscript_model_gives_d_and_e_only():
    import warnings

    net = user_sequential()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script's deprecation notice
        scripted = torch.jit.script(net)
    x = torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    maps, plain = occlude(scripted, x, size=32, stride=16), occlude(net, x, size=32, stride=16)
    assert maps.layer is None and maps.fmap_total is None and maps.fmap is None
    assert torch.allclose(maps.p_target, plain.p_target, rtol=1e-10, atol=1e-15)
    assert torch.equal(maps.top_label, plain.top_label)
    assert set(maps.resampled()) == {"p_target", "log_p_target", "top_label"}
    from zfnet_cli.occlusion import plot_fig7

    titles = [ax.get_title() for ax in plot_fig7(maps, x).axes]
    assert not any(t.startswith("(b)") for t in titles) and "(e) most probable label" in titles
    with pytest.raises(ValueError, match="TorchScript model's layers cannot be read"):
        occlude(scripted, x, size=32, stride=16, layer="1")
