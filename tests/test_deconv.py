"""The switch deconvnet (paper §2.1): hand-computed cases, and autograd as an independent
implementation (ReLU backward replaced by relu(grad)) on LRN-free networks."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import alexnet
from torchvision.models.vgg import cfgs, make_layers

from zfnet_cli.deconv import Deconvnet, Request, receptive_field, unpool
from zfnet_cli.model import ModelConfig, SwitchMaxPool2d, ZFNet


def one_conv(weight, bias=0.0):
    conv = nn.Conv2d(1, 1, len(weight), bias=True)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(weight, dtype=torch.float32).view(conv.weight.shape))
        conv.bias.fill_(bias)
    return conv


# --- hand-computed cases ---------------------------------------------------------------------

X4 = torch.tensor([[1., 2., 0., 5.],
                   [3., 4., 6., 1.],
                   [0., 9., 2., 2.],
                   [7., 1., 3., 8.]]).view(1, 1, 4, 4)


@pytest.mark.parametrize("pool", [nn.MaxPool2d(2, 2), SwitchMaxPool2d(2, 2)])
def test_switches_and_unpool_by_hand(pool):
    # windows (2x2 stride 2): max 4 at (1,1), 6 at (1,2), 9 at (2,1), 8 at (3,3)
    net = nn.Sequential(one_conv([[1.]]), pool)  # identity 1x1 conv, then the pool
    deconv = Deconvnet(net)
    state = deconv.forward(X4)
    assert torch.equal(state.switches["1"], torch.tensor([[[[5, 6], [9, 15]]]]))
    assert torch.equal(state.activations["conv1"], torch.tensor([[[[4., 6.], [9., 8.]]]]))
    unpooled = torch.tensor([[0., 0., 0., 0.],
                             [0., 4., 6., 0.],
                             [0., 9., 0., 0.],
                             [0., 0., 0., 8.]]).view(1, 1, 4, 4)
    assert torch.equal(unpool(state.activations["conv1"], state.switches["1"], (4, 4)), unpooled)
    # non-overlapping pools: same as torch's own unpooling
    assert torch.equal(F.max_unpool2d(torch.tensor([[[[4., 6.], [9., 8.]]]]),
                                      state.switches["1"], 2, 2, output_size=(4, 4)), unpooled)
    # whole map through unpool, (no ReLU), 1x1 identity filter = the unpooled map
    assert torch.equal(deconv.project(X4, [Request(0, "conv1", 0)]), unpooled)
    # one activation: only the 9 at switch 9 comes back
    expected = torch.zeros(1, 1, 4, 4)
    expected[0, 0, 2, 1] = 9.
    assert torch.equal(deconv.project(X4, [(0, "conv1", 0, (1, 0))]), expected)


def test_overlapping_switches_add_up():
    # 1x3 input, pool 1x2 stride 1: both windows pick the 5 in the middle (switch 1 twice)
    x = torch.tensor([[[[1., 5., 2.]]]])
    pooled, sw = F.max_pool2d(x, (1, 2), 1, return_indices=True)
    assert torch.equal(sw, torch.tensor([[[[1, 1]]]]))
    assert torch.equal(unpool(pooled, sw, (1, 3)), torch.tensor([[[[0., 10., 0.]]]]))


def test_rectify_on_the_way_down():
    # conv 1x1 with weight -1: the kept activation is negative before the down ReLU ->
    # after unpool the reconstruction is rectified; the ReLU sits between conv and pool.
    net = nn.Sequential(one_conv([[1.]]), nn.ReLU(), nn.MaxPool2d(2, 2), one_conv([[-1.]]))
    deconv = Deconvnet(net)
    x = X4.clone()
    # layer2 = -pool(relu(x)) = [[-4, -6], [-9, -8]]; filtered down by -1 -> +4 etc.: positive
    proj = deconv.project(x, [Request(0, "conv2", 0, (0, 1))])
    expected = torch.zeros(1, 1, 4, 4)
    expected[0, 0, 1, 2] = 6.  # (-6) * (-1) unpooled to switch 6, rectify keeps it
    assert torch.equal(proj, expected)
    # layer1 with a negative weight: conv(-1) then ReLU: zero everywhere but nothing to keep
    net2 = nn.Sequential(one_conv([[-1.]]), nn.ReLU(), nn.MaxPool2d(2, 2))
    assert torch.equal(Deconvnet(net2).project(x, [Request(0, "conv1", 0)]),
                       torch.zeros(1, 1, 4, 4))


W2 = [[1., 2.], [3., 4.]]
X3 = torch.tensor([[1., 0., 2.],
                   [0., 1., 0.],
                   [3., 0., 1.]]).view(1, 1, 3, 3)


def test_one_conv_projection_by_hand():
    # forward (bias 10): [[5, 7], [11, 5]] + 10 = [[15, 17], [21, 15]]
    deconv = Deconvnet(nn.Sequential(one_conv(W2, bias=10.), nn.ReLU()))
    assert torch.equal(deconv.forward(X3).activations["conv1"],
                       torch.tensor([[[[15., 17.], [21., 15.]]]]))
    # keep (0, 1) = 17: filter down = 17 * W placed at rows 0-1, cols 1-2; no bias going down
    proj = deconv.project(X3, [Request(0, "conv1", 0, (0, 1))])
    assert torch.equal(proj, torch.tensor([[[[0., 17., 34.],
                                             [0., 51., 68.],
                                             [0., 0., 0.]]]]))
    # whole map: the full transposed convolution of [[15, 17], [21, 15]] with W
    proj = deconv.project(X3, [Request(0, "conv1", 0, None)])
    assert torch.equal(proj, torch.tensor([[[[15., 47., 34.],
                                             [66., 168., 98.],
                                             [63., 129., 60.]]]]))


def test_strided_filter_down_restores_the_input_size():
    # 5x5 input, 2x2 kernel stride 2: the last row/column is never reached forward
    conv = one_conv(W2)
    conv.stride = (2, 2)
    deconv = Deconvnet(nn.Sequential(conv))
    x = torch.ones(1, 1, 5, 5)
    proj = deconv.project(x, [Request(0, "conv1", 0, (1, 1))])  # value 1+2+3+4 = 10 (bias 0)
    expected = torch.zeros(1, 1, 5, 5)
    expected[0, 0, 2:4, 2:4] = 10. * torch.tensor(W2)
    assert torch.equal(proj, expected)


# --- autograd reference: ReLU backward = relu(grad) ------------------------------------------

class DeconvReLU(torch.autograd.Function):
    """Forward ReLU; backward rectifies the incoming gradient (the deconvnet rule), ignoring
    where the forward was positive."""

    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(min=0)


def autograd_projection(seq, image, layer_k, fmap, position):
    """Run seq up to the end of stage ``layer_k`` (1-based conv count) and back-propagate the
    kept activation(s) with the deconvnet ReLU rule."""
    x = image.clone().requires_grad_(True)
    h, convs = x, 0
    for m in seq:
        if isinstance(m, nn.Conv2d):
            convs += 1
            if convs > layer_k:
                break
        h = DeconvReLU.apply(h) if isinstance(m, nn.ReLU) else m(h)
    seed = torch.zeros_like(h)
    if position is None:
        seed[0, fmap] = h[0, fmap].detach()
    else:
        seed[0, fmap, position[0], position[1]] = h[0, fmap, position[0], position[1]].detach()
    (grad,) = torch.autograd.grad(h, x, seed)
    return grad


def strongest(act):
    """(fmap, (y, x)) of the strongest activation of image 0."""
    a = act[0]
    flat = int(a.flatten().argmax())
    c, rest = divmod(flat, a.shape[1] * a.shape[2])
    return c, divmod(rest, a.shape[2])


def small_zfnet(**kw):
    cfg = ModelConfig(input_size=kw.pop("input_size", 64), channels=[6, 8, 8, 8, 6],
                      fc_widths=[8, 8], init="kaiming", **kw)
    return ZFNet(cfg, num_classes=5).double().eval()


# name -> (feature Sequential, input side, layers checked (1-based conv count; None: all))
NETS = {
    "zfnet": lambda: (small_zfnet(lrn=False).features, 64, None),
    "zfnet-alexnet-style-no34": lambda: (small_zfnet(
        lrn=False, input_size=67, kernels=[11, 5, 3, 3, 3], strides=[4, 1, 1, 1, 1],
        paddings=[2, 2, 1, 1, 1], drop=["conv3", "conv4"]).features, 67, None),
    "torchvision-alexnet": lambda: (alexnet(weights=None).features.double().eval(), 67, None),
    # exactly vgg16(weights=None).features, without building its 120M-parameter head; a few
    # layers only, to stay fast on 2 CPU cores (each crosses a different number of pools)
    "torchvision-vgg16": lambda: (make_layers(cfgs["D"]).double().eval(), 32, [2, 13]),
}


@pytest.mark.parametrize("name", NETS)
def test_projection_equals_autograd_without_lrn(name):
    torch.manual_seed(0)
    seq, size, check = NETS[name]()
    deconv = Deconvnet(seq)
    image = torch.randn(1, 3, size, size, dtype=torch.float64)
    acts = deconv.forward(image).activations
    for layer, act in acts.items():  # the size arithmetic (ceil-mode pools) = the real shapes
        assert deconv._sizes(layer, size)[1] == tuple(act.shape[-2:]), layer
    requests, expected = [], []
    for k, layer in enumerate(deconv.layers, start=1):
        if check is not None and k not in check:
            continue
        fmap, pos = strongest(acts[layer])
        assert acts[layer][0, fmap, pos[0], pos[1]] > 0, f"{name} {layer}: nothing to project"
        for position in (pos, None):
            requests.append(Request(0, layer, fmap, position))
            expected.append(autograd_projection(seq, image, k, fmap, position))
    got = deconv.project(image, requests, batch_size=3)
    assert got.shape == (len(requests), 3, size, size)
    for r, g, e in zip(requests, got, expected):
        assert e.abs().max() > 0, r
        torch.testing.assert_close(g, e[0], rtol=1e-5, atol=1e-8 * float(e.abs().max()),
                                   msg=lambda m: f"{name} {r}: {m}")


def test_layer_names_and_points():
    zf = small_zfnet()
    assert Deconvnet(zf).layers == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert Deconvnet(small_zfnet(drop=["conv3", "conv4"])).layers == ["conv1", "conv2", "conv5"]
    assert Deconvnet(make_layers(cfgs["D"])).layers == [f"conv{k}" for k in range(1, 14)]
    image = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    acts = Deconvnet(zf).forward(image).activations
    ref = zf.layer_outputs(image)
    for layer in Deconvnet(zf).layers:  # "stage" point = ZFNet.layer_outputs (post pool / norm)
        assert torch.equal(acts[layer], ref[layer]), layer
    # module names read that module's output, the same names zfnet_cli.layers resolves
    assert torch.equal(acts["features.pool5"], ref["conv5"])
    assert torch.equal(acts["features.conv1"], zf.features.conv1(image))
    relu = Deconvnet(zf, point="relu").forward(image).activations
    assert torch.equal(relu["conv1"], F.relu(zf.features.conv1(image)))
    assert relu["conv1"].shape == (2, 6, 30, 30) and acts["conv1"].shape == (2, 6, 15, 15)


def test_with_lrn_runs_and_differs_from_autograd():
    torch.manual_seed(1)
    net = small_zfnet()  # LRN after pool1 and pool2, the ZFNet default
    assert isinstance(net.features.norm1, nn.LocalResponseNorm)
    deconv = Deconvnet(net)
    image = torch.randn(1, 3, 64, 64, dtype=torch.float64) * 50  # big enough for LRN to bite
    fmap, pos = strongest(deconv.forward(image).activations["conv3"])
    got = deconv.project(image, [Request(0, "conv3", fmap, pos)])
    assert got.shape == (1, 3, 64, 64) and torch.isfinite(got).all() and got.abs().max() > 0
    ref = autograd_projection(net.features, image, 3, fmap, pos)  # back-props through LRN
    assert not torch.allclose(got, ref, rtol=1e-3, atol=0)


def test_batched_equals_one_at_a_time():
    torch.manual_seed(2)
    deconv = Deconvnet(small_zfnet())
    images = torch.randn(5, 3, 64, 64, dtype=torch.float64)
    # at 64 px: conv1 6x15x15, conv2-conv4 8x3x3, conv5 6x1x1
    requests = [Request(3, "conv5", 2, (0, 0)), Request(0, "conv1", 4, None),
                Request(1, "conv2", 7, (2, 1)), Request(3, "conv1", 0, (5, 9)),
                Request(4, "conv4", 1, None), Request(0, "conv5", 2, (0, 0)),
                Request(2, "conv3", 5, (0, 2))]
    single = torch.cat([deconv.project(images, [r]) for r in requests])
    for batch_size in (2, 32):
        torch.testing.assert_close(deconv.project(images, requests, batch_size=batch_size),
                                   single, rtol=1e-10, atol=1e-12)
    # switches are per image: the same request on another image projects differently
    assert not torch.allclose(single[0], deconv.project(images, [(2, "conv5", 2, (0, 0))])[0])


@pytest.mark.parametrize("bad, where", [
    (nn.BatchNorm2d(4), "layer 1 '1' (BatchNorm2d)"),
    (nn.Sequential(nn.Conv2d(4, 4, 1)), None),  # nested Sequential: flattened, fine
    (nn.AvgPool2d(2), "layer 1 '1' (AvgPool2d)"),
])
def test_unsupported_layer_is_named(bad, where):
    seq = nn.Sequential(nn.Conv2d(3, 4, 3), bad, nn.ReLU())
    if where is None:
        assert Deconvnet(seq).layers == ["conv1", "conv2"]
        return
    with pytest.raises(ValueError, match=f"layer 1 '1' \\({type(bad).__name__}\\)"):
        Deconvnet(seq)


def test_residual_block_is_named():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return x + self.conv(x)

    seq = nn.Sequential()
    seq.add_module("conv1", nn.Conv2d(3, 4, 3))
    seq.add_module("block", Residual())
    with pytest.raises(ValueError, match="'block' \\(Residual\\)"):
        Deconvnet(seq)


def test_bad_requests():
    deconv = Deconvnet(small_zfnet())
    images = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    for req, msg in [((0, "fc6", 0, None), "unknown layer 'fc6'"),
                     ((2, "conv1", 0, None), "image 2 out of range"),
                     ((0, "conv1", 6, None), "fmap 6 out of range"),
                     ((0, "conv1", 0, (15, 0)), "outside conv1's 15x15")]:
        with pytest.raises(ValueError, match=msg):
            deconv.project(images, [req])


# --- receptive field ---------------------------------------------------------------------------

def test_receptive_field_by_hand():
    # conv 3x3 pad 1 -> pool 2/2 -> conv 3x3 pad 0, on 8x8: layer2 is 2x2
    seq = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.MaxPool2d(2, 2), nn.Conv2d(2, 2, 3))
    # (0,0): conv2 rows 0..2 of the 4x4 pool output -> pool input 0..5 -> conv1 input -1..6
    assert receptive_field(seq, "conv2", 0, 0, 8) == (0, 0, 7, 7)
    # (1,0): 1..3 -> 2..7 -> 1..8, clipped to 7
    assert receptive_field(seq, "conv2", 1, 0, 8) == (1, 0, 8, 7)
    assert receptive_field(seq, "conv1", 3, 1, (8, 9)) == (5, 1, 8, 5)  # pool 6..7, conv 5..8


def test_receptive_field_zfnet_conv1():
    net = ZFNet(ModelConfig(channels=[4, 4, 4, 4, 4], fc_widths=[4, 4]), num_classes=2)
    relu = Deconvnet(net, point="relu")  # conv1 itself: 7x7 window, stride 2, pad 1
    assert receptive_field(relu, "conv1", 0, 0, 224) == (0, 0, 6, 6)  # -1..5, clipped
    assert receptive_field(relu, "conv1", 10, 20, 224) == (19, 39, 26, 46)  # 2y-1 .. 2y+5
    assert receptive_field(relu, "conv1", 109, 109, 224) == (217, 217, 224, 224)
    # stage point (after pool1 3/2): conv1 rows 2y..2y+2 -> pixels 4y-1 .. 4y+9, 11 wide
    assert receptive_field(net, "conv1", 10, 20, 224) == (39, 79, 50, 90)
    assert receptive_field(net, "conv1", 54, 0, 224) == (215, 0, 224, 10)  # ceil-mode edge
    with pytest.raises(ValueError, match="outside conv1's 55x55"):
        receptive_field(net, "conv1", 55, 0, 224)


def test_projection_stays_inside_receptive_field():
    torch.manual_seed(3)
    net = small_zfnet()
    deconv = Deconvnet(net)
    image = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    acts = deconv.forward(image).activations
    for layer in ("conv1", "conv2", "conv3"):
        fmap, (y, x) = strongest(acts[layer])
        proj = deconv.project(image, [Request(0, layer, fmap, (y, x))])[0]
        y0, x0, y1, x1 = receptive_field(deconv, layer, y, x, 64)
        outside = proj.abs().sum(0)
        assert outside[y0:y1, x0:x1].sum() > 0, layer
        outside[y0:y1, x0:x1] = 0
        assert outside.max() == 0, layer
