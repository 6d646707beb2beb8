"""The deconvnet on any network (zfnet_cli.deconv_graph) against the explicit switch deconvnet
on plain stacks, Captum's NeuronDeconvolution where its ReLU-module hooks apply, and a
hand-built modified backward elsewhere; functional twins; receptive fields; one-line errors."""
import copy
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.convnext import LayerNorm2d

from zfnet_cli.deconv import Deconvnet, Request, receptive_field
from zfnet_cli.deconv_graph import GraphDeconvnet, NoRuleError, deconvnet_for, project_fmap
from zfnet_cli.model import ModelConfig, ZFNet


def slim(name, width):
    """torchvision's ``name`` with its real feature part and a narrow classifier: the 4096-wide
    head (tens of millions of weights, seconds to initialise on 2 cores) is not what is tested
    here. Default PyTorch initialisation of the features, seeded."""
    def build():
        torch.manual_seed(0)
        with torch.device("meta"):
            net = getattr(torchvision.models, name)(num_classes=7)
        net.features = net.features.to_empty(device="cpu")
        for m in net.features.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        net.classifier = nn.Sequential(nn.Linear(width, 16), nn.ReLU(), nn.Linear(16, 7))
        return net
    return build


vgg16_bn = slim("vgg16_bn", 512 * 7 * 7)


def tv(name):
    def build():
        torch.manual_seed(0)
        return getattr(torchvision.models, name)(num_classes=7)
    return build


def randomise_bn(net):
    """Non-trivial BatchNorm statistics (fresh ones are the identity in eval mode)."""
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return net


def strongest(act):
    """(C, h, w) -> the map holding the largest activation and its position."""
    fmap = int(act.amax(dim=(1, 2)).argmax())
    y, x = divmod(int(act[fmap].argmax()), act.shape[-1])
    return fmap, (y, x)


def layer_output(net, name, x):
    out = {}
    h = dict(net.named_modules())[name].register_forward_hook(
        lambda m, i, o: out.setdefault("a", o.detach().clone()))
    with torch.no_grad():
        net(x)
    h.remove()
    return out["a"]


# ------------------------------------------------------------------ plain stacks

def small_zfnet():
    torch.manual_seed(0)
    cfg = ModelConfig(input_size=64, channels=[6, 8, 8, 8, 6], fc_widths=[8, 8], init="kaiming")
    return ZFNet(cfg, num_classes=5)


@pytest.mark.parametrize("build, size", [
    (small_zfnet, 64),  # with LRN: both skip it on the way down
    (slim("alexnet", 256 * 6 * 6), 64),
    (slim("vgg11", 512 * 7 * 7), 32),
], ids=["zfnet", "alexnet", "vgg11"])
def test_equals_the_explicit_switch_deconvnet_on_plain_stacks(build, size):
    net = build().double().eval()
    torch.manual_seed(2)
    images = torch.randn(2, 3, size, size, dtype=torch.float64) * 3
    explicit, graph = Deconvnet(net), GraphDeconvnet(net)
    assert graph.layers == explicit.layers  # conv1 .. convK, the same names
    acts = explicit.forward(images).activations
    requests = []
    for layer in explicit.layers:
        for img in range(2):
            fmap, pos = strongest(acts[layer][img])
            requests += [Request(img, layer, fmap, pos), Request(img, layer, fmap, None)]
    ours = graph.project(images, requests, batch_size=5)
    theirs = explicit.project(images, requests)
    assert ours.abs().amax(dim=(1, 2, 3)).min() > 0  # every projection has something in it
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("build, size", [(small_zfnet, 64), (slim("alexnet", 256 * 6 * 6), 64),
                                         (slim("vgg11", 512 * 7 * 7), 32)], ids=["zfnet", "alexnet", "vgg11"])
def test_receptive_field_from_the_graph_equals_the_plain_stack_formula(build, size):
    net = build().eval()
    explicit, graph = Deconvnet(net), GraphDeconvnet(net)
    for layer in explicit.layers:
        h, w = explicit._sizes(layer, size)[1]
        positions = sorted({(0, 0), (h - 1, w - 1), (h // 2, w // 3), (min(1, h - 1), w - 1)})
        got = graph.receptive_fields(layer, positions, size)
        assert got == [receptive_field(explicit, layer, y, x, size) for y, x in positions], layer


def test_receptive_field_of_a_residual_net_is_the_union_of_its_paths():
    net = tv("resnet18")().eval()
    graph = GraphDeconvnet(net)
    # layer1.0 at 64 px: stem 7x7/2 pad 3, max-pool 3x3/2 pad 1, then two 3x3 convs (the
    # skip path reaches less): (0, 0) sees pixels 0..13 (clipped), (8, 8) pixels 19..45:
    # 3x3 convs [6, 10] -> pool [11, 21] -> stem [22 - 3, 42 - 3 + 6]
    assert graph.receptive_field("layer1.0", 0, 0, 64) == (0, 0, 14, 14)
    assert graph.receptive_field("layer1.0", 8, 8, 64) == (19, 19, 46, 46)
    # a 1x1 downsampling skip does not shrink it: the conv path decides
    assert graph.receptive_field("layer4.1", 0, 0, 64) == (0, 0, 64, 64)


# ------------------------------------------------------------------ any network

class _HandRectify(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, module):
        return module(x.clone())

    @staticmethod
    def backward(ctx, grad):
        return F.relu(grad), None


class HandRectify(nn.Module):
    """Independent of zfnet's TorchFunctionMode: the module's forward, backward relu(grad)."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return _HandRectify.apply(x, self.module)


class Detached(nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x).detach()


class ConstantStatsLN(nn.Module):
    """LayerNorm (channels-last) or LayerNorm2d (channels-first) with detached statistics."""

    def __init__(self, ln, channel_dim):
        super().__init__()
        self.ln, self.dim = ln, channel_dim

    def forward(self, x):
        mean = x.mean(self.dim, keepdim=True).detach()
        var = x.var(self.dim, unbiased=False, keepdim=True).detach()
        shape = [1] * x.dim()
        shape[self.dim] = -1
        return ((x - mean) / torch.sqrt(var + self.ln.eps) * self.ln.weight.view(shape)
                + self.ln.bias.view(shape))


def hand_built(net):
    """A copy of ``net`` with every activation module rectifying on the way down, every gate a
    constant and every LayerNorm's statistics constant: the definition, written by hand."""
    net = copy.deepcopy(net)
    for parent in list(net.modules()):
        for name, m in parent.named_children():
            if name == "scale_activation":  # torchvision's SqueezeExcitation gate
                setattr(parent, name, Detached(m))
            elif isinstance(m, (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.GELU)):
                setattr(parent, name, HandRectify(m))
            elif isinstance(m, LayerNorm2d):
                setattr(parent, name, ConstantStatsLN(m, 1))
            elif isinstance(m, nn.LayerNorm):
                setattr(parent, name, ConstantStatsLN(m, -1))
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def reference_projection(net, x, layer, fmap, pos):
    """The backward pass through ``net`` (already modified by hand) seeded with the
    activation's value (rectification is not linear in the seed: a negative value does not
    just flip the sign)."""
    x = x.clone().requires_grad_(True)
    out = {}
    h = dict(net.named_modules())[layer].register_forward_hook(lambda m, i, o: out.setdefault("a", o))
    net(x)
    h.remove()
    a = out["a"][0, fmap, pos[0], pos[1]]
    (g,) = torch.autograd.grad(a, x, a.detach())
    return g.detach()


ANY = {  # name -> (builder, layer, input side, reference)
    "resnet18": (tv("resnet18"), "layer3.1", 32, "captum"),
    "vgg16_bn": (vgg16_bn, "conv8", 32, "captum"),
    "densenet121": (tv("densenet121"), "features.transition2", 32, "captum"),
    "mobilenet_v3_small": (tv("mobilenet_v3_small"), "features.6", 32, "hand"),
    "efficientnet_b0": (tv("efficientnet_b0"), "features.4", 32, "hand"),
    "convnext_tiny": (tv("convnext_tiny"), "features.5", 32, "hand"),
}


@pytest.mark.parametrize("name", list(ANY))
def test_equals_an_independent_implementation(name):
    build, layer, size, reference = ANY[name]
    net = randomise_bn(build()).eval()
    torch.manual_seed(3)
    x = torch.randn(2, 3, size, size)
    graph = deconvnet_for(net, [layer], "deconvnet")  # the paper's rule (default: guided)
    assert isinstance(graph, GraphDeconvnet)
    module_name = graph.resolve(layer).module_name
    act = layer_output(net, module_name, x)
    picks = [(img, *strongest(act[img])) for img in range(2)]
    ours = graph.project(x, [Request(img, layer, f, p) for img, f, p in picks])
    assert ours.abs().amax(dim=(1, 2, 3)).min() > 0
    if reference == "captum":
        from captum.attr import NeuronDeconvolution

        module = dict(net.named_modules())[module_name]
        for (img, f, p), got in zip(picks, ours):
            attr = NeuronDeconvolution(net, module).attribute(x[img:img + 1], neuron_selector=(f, *p))
            value = act[img, f, p[0], p[1]]
            assert value > 0  # Captum seeds 1: its attribution times a positive value is ours
            want = attr[0] * value
            # float rounding scales with the map: maps here reach about 7, where float32's step
            # is about 5e-7, and two summation orders differ by a few steps at the largest pixels
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6 * max(1.0, want.abs().max().item()))
    else:
        hand = hand_built(net)
        for (img, f, p), got in zip(picks, ours):
            want = reference_projection(hand, x[img:img + 1], module_name, f, p)[0]
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


class Residual(nn.Module):
    """A residual net written with modules, or (``functional=True``) with the same weights and
    functional / in-place / method activations and pooling."""

    def __init__(self, functional=False):
        super().__init__()
        torch.manual_seed(0)
        self.functional = functional
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.act = nn.Sequential(nn.ReLU(inplace=True))
        self.pool = nn.MaxPool2d(2)
        self.six, self.gelu = nn.ReLU6(), nn.GELU()
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        if self.functional:
            x = F.max_pool2d(torch.relu_(self.bn(self.stem(x))), 2)
            y = F.gelu(F.relu6(self.a(x)))
            x = (self.b(y) + x).relu()
        else:
            x = self.pool(self.act(self.bn(self.stem(x))))
            y = self.gelu(self.six(self.a(x)))
            x = self.act(self.b(y) + x)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def test_a_functional_model_projects_as_its_module_twin():
    modules, functional = randomise_bn(Residual()).eval(), Residual(functional=True)
    functional.load_state_dict(modules.state_dict())
    functional.eval()
    torch.manual_seed(4)
    x = torch.randn(3, 3, 16, 16)
    requests = [Request(0, "b", 2, (3, 4)), Request(1, "b", 5, None), Request(2, "head", 1, None)]
    a = GraphDeconvnet(modules).project(x, requests)
    b = GraphDeconvnet(functional).project(x, requests)
    assert a.abs().amax(dim=(1, 2, 3)).min() > 0
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    # and the module twin equals the hand-built modified backward (module ReLUs swapped)
    hand = hand_built(modules)
    want = reference_projection(hand, x[:1], "b", 2, (3, 4))
    torch.testing.assert_close(a[:1], want, rtol=1e-5, atol=1e-7)
    # a plain gradient would differ: the rectification is really applied
    plain = x[:1].clone().requires_grad_(True)
    out = {}
    h = modules.b.register_forward_hook(lambda m, i, o: out.setdefault("a", o))
    modules(plain)
    h.remove()
    (g,) = torch.autograd.grad(out["a"][0, 2, 3, 4], plain)
    assert not torch.allclose(g * out["a"][0, 2, 3, 4], a[0], rtol=1e-3, atol=1e-6)


def test_batched_projection_equals_one_at_a_time_and_fig7_helper():
    net = randomise_bn(tv("resnet18")()).eval()
    torch.manual_seed(5)
    x = torch.randn(3, 3, 32, 32)
    requests = [Request(i % 3, layer, i, (0, 1) if i % 2 else None)
                for i, layer in enumerate(["layer2.0", "layer3.1", "layer2.0", "fc", "layer4"])]
    requests[3] = Request(0, "fc", 3, None)
    together = GraphDeconvnet(net).project(x, requests, batch_size=2)
    for r, got in zip(requests, together):
        alone = GraphDeconvnet(net).project(x, [r])[0]
        torch.testing.assert_close(got, alone, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(project_fmap(net, x[1], "layer3.1", 1, (0, 1), "deconvnet"), together[1],
                               rtol=1e-4, atol=1e-6)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        q = self.conv(x).flatten(2)  # (B, 4, hw)
        return torch.softmax(q @ q.transpose(1, 2), dim=-1)


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        return y * y  # a product of two signals


def test_operations_without_a_rule_fail_in_one_line():
    x = torch.randn(1, 3, 8, 8)
    attention = nn.Sequential(OrderedDict(att=Attention(), out=nn.Identity()))
    with pytest.raises(NoRuleError) as err:
        GraphDeconvnet(attention).project(x, [Request(0, "out", 0, None)])
    assert str(err.value).startswith("the deconvnet has no rule for matmul in module 'att' "
                                     "(a product of two signals)")
    assert "\n" not in str(err.value)
    gated = nn.Sequential(OrderedDict(g=Gated(), out=nn.Identity()))
    with pytest.raises(NoRuleError, match="no rule for mul in module 'g'"):
        GraphDeconvnet(gated).project(x, [Request(0, "out", 0, None)])
    net = tv("resnet18")().eval()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match=r"unknown layer 'layer9'"):
        GraphDeconvnet(net).project(x, [Request(0, "layer9", 0, None)])
    with pytest.raises(ValueError, match=r"request 0: fmap 600 out of range for layer4 \(512 maps\)"):
        GraphDeconvnet(net).project(x, [Request(0, "layer4", 600, None)])
    with pytest.raises(ValueError, match=r"runs 2 times"):
        GraphDeconvnet(net).project(x, [Request(0, "layer1.0.relu", 0, None)])


def _zfnet():
    torch.manual_seed(0)
    return ZFNet(ModelConfig())


@pytest.mark.parametrize("rule", ["deconvnet", "guided", "gradient"])
@pytest.mark.parametrize("net, size, layers", [
    (_zfnet, 224, ["conv2", "conv5"]),
    (lambda: randomise_bn(torchvision.models.resnet18(weights=None)), 64, ["layer1.1", "layer3.0"]),
    ("real_network", 64, ["_blocks.3", "_blocks.10"]),
], ids=["zfnet", "resnet18", "efficientnet-lite0"])
def test_one_forward_per_image_serves_its_requests_as_one_per_request(net, size, layers, rule,
                                                                      request):
    """Sharing one recorded forward among an image's requests changes nothing but float
    rounding: requests of two layers, images that repeat (as in a top-9 explorer), whole maps
    and given seed values, in groups smaller than the request set."""
    model = (request.getfixturevalue(net).model if isinstance(net, str) else net()).eval()
    torch.manual_seed(3)
    x = torch.randn(4, 3, size, size)
    images = [0, 0, 1, 0, 2, 1, 0, 3, 0, 1]
    reqs = [Request(img, layer, 3 * i + j, None if i % 4 == 3 else (i % 2, 1),
                    2.5 if i % 5 == 4 else None)
            for j, layer in enumerate(layers) for i, img in enumerate(images)]
    deconv = GraphDeconvnet(model, rule=rule)
    shared = deconv.project(x, reqs, batch_size=3)
    deconv._share_forward = False
    alone = deconv.project(x, reqs, batch_size=3)
    assert shared.flatten(1).abs().amax(1).gt(0).sum() >= len(reqs) // 2  # not trivially zero
    scale = alone.flatten(1).abs().amax(1).clamp_min(1e-12)[:, None, None, None]
    torch.testing.assert_close(shared / scale, alone / scale, rtol=0, atol=1e-5)


def test_shared_rows_serve_every_request_once_from_fewer_forwards():
    from zfnet_cli.deconv_graph import _shared_rows

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 20, (144,), generator=g).tolist()  # 16 units x top 9 of 20 images
    groups = _shared_rows(images, batch_size=8)
    rows = [row for group in groups for row in group]
    assert sorted(j for row in rows for j in row) == list(range(144))
    assert all(len({images[j] for j in row}) == 1 for row in rows)
    assert all(len(group) <= 8 for group in groups)
    forward = len(rows)
    backward = sum(len(group) * len(group[0]) for group in groups)
    assert forward + backward < 2 * 144  # cheaper than one forward and backward per request
    assert forward < 144
    assert _shared_rows([3, 1, 2], batch_size=2) == [[[0], [1]], [[2]]]  # nothing to share
    assert [len(r) for g in _shared_rows(images, 8, most=1) for r in g] == [1] * 144
