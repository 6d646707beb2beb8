"""Streaming top-9 (Fig 2) against a brute force over all activations held in memory."""
import pytest
import torch
from torch import nn

from zfnet_cli.deconv import Deconvnet
from zfnet_cli.model import ModelConfig, ZFNet
from zfnet_cli.top9 import scan_top9


def brute_force(acts, k):
    """acts (N, M, h, w) -> per map the k best (value, image, (y, x)) by plain Python: per
    (image, map) its max and first argmax (row-major), then value desc, image asc."""
    n, m, h, w = acts.shape
    out = []
    for fmap in range(m):
        records = []
        for img in range(n):
            flat = acts[img, fmap].flatten().tolist()
            best = max(flat)
            pos = flat.index(best)
            records.append((best, img, divmod(pos, w)))
        out.append(sorted(records, key=lambda r: (-r[0], r[1]))[:k])
    return out


def batches_of(images, size):
    return [images[i:i + size] for i in range(0, len(images), size)]


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    cfg = ModelConfig(input_size=64, channels=[6, 8, 8, 8, 6], fc_widths=[8, 8], init="kaiming")
    return ZFNet(cfg, num_classes=5).eval()  # float32: fast on CPU


def test_matches_brute_force_for_any_batch_size(net):
    torch.manual_seed(1)
    images = torch.randn(11, 3, 64, 64)
    everything = net.layer_outputs(images)  # all activations, all images, in memory
    layers = ["conv1", "conv2", "conv5"]
    results = [scan_top9(net, batches_of(images, b), layers, k=4) for b in (1, 4, 11)]
    for layer in layers:
        expected = brute_force(everything[layer], 4)
        m = everything[layer].shape[1]
        for top in results:
            t = top[layer]
            assert t.values.shape == (m, 4) and t.images.shape == (m, 4)
            assert t.positions.shape == (m, 4, 2)
            assert t.images.dtype == t.positions.dtype == torch.int64
            assert t.images.tolist() == [[r[1] for r in recs] for recs in expected], layer
            assert t.positions.tolist() == [[list(r[2]) for r in recs] for recs in expected]
            torch.testing.assert_close(t.values, torch.tensor(
                [[r[0] for r in recs] for recs in expected]))
        for top in results[1:]:  # batch size changes nothing
            assert torch.equal(top[layer].images, results[0][layer].images)


def test_default_all_layers_k9_and_fewer_images_than_k(net):
    images = torch.randn(5, 3, 64, 64)
    top = scan_top9(Deconvnet(net), batches_of(images, 2))
    assert list(top) == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert top["conv3"].values.shape == (8, 5)  # only 5 images: 5 records, not 9
    assert sorted(top["conv3"].images[0].tolist()) == [0, 1, 2, 3, 4]


def exact_net():
    """1x1 conv with weight 1, ReLU, 2x2 pool: integer images give exact, tying values."""
    conv = nn.Conv2d(1, 1, 1, bias=False)
    nn.init.ones_(conv.weight)
    return nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(2, 2))


def test_ties_rank_the_lower_image_index_first():
    img = torch.zeros(1, 1, 4, 4)
    img[0, 0, 1, 3] = img[0, 0, 2, 0] = 5.  # two equal maxima: first in row-major wins
    images = torch.cat([img] * 6)
    images[2] *= 2  # strictly strongest: image 2 first, then the tie 0, 1, 3, 4, 5
    for b in (1, 4, 6):
        t = scan_top9(exact_net(), batches_of(images, b), k=4)["conv1"]
        assert t.images.tolist() == [[2, 0, 1, 3]]
        assert t.values.tolist() == [[10., 5., 5., 5.]]
        assert t.positions.tolist() == [[[0, 1], [0, 1], [0, 1], [0, 1]]]  # pooled (1,3)->(0,1)
    # indices carried by the batches, out of order: the tie still ranks by global index
    shuffled = [(images[:2], torch.tensor([70, 30])), (images[2:5], [50, 10, 90]),
                (images[5:], torch.tensor([20]))]
    t = scan_top9(exact_net(), shuffled, k=3, batches_carry_indices=True)["conv1"]
    assert t.images.tolist() == [[50, 10, 20]]  # image 2 (index 50) strongest, then 10 < 20


def test_labels_ignored_offset_and_progress(net):
    images = torch.randn(6, 3, 64, 64)
    plain = scan_top9(net, batches_of(images, 4), ["conv2"], k=3)["conv2"]
    with_labels = [(b, torch.zeros(len(b), dtype=torch.long)) for b in batches_of(images, 4)]
    t = scan_top9(net, with_labels, ["conv2"], k=3, start=100, progress=True)["conv2"]
    assert torch.equal(t.images, plain.images + 100)
    assert torch.equal(t.values, plain.values) and torch.equal(t.positions, plain.positions)


def test_errors(net):
    with pytest.raises(ValueError, match="unknown layer 'conv9'"):
        scan_top9(net, [torch.randn(1, 3, 64, 64)], ["conv9"])
    with pytest.raises(ValueError, match="no batches"):
        scan_top9(net, [], ["conv1"])
    with pytest.raises(ValueError, match="carries 1 indices"):
        scan_top9(net, [(torch.randn(2, 3, 64, 64), [0])], ["conv1"], batches_carry_indices=True)


# ------------------------------------------------------------------ any network

ARCHS = {  # torchvision model -> (layers scanned, input side)
    "resnet18": (["layer1.0", "layer3.1", "fc"], 32),
    "vgg16_bn": (["conv2", "features.23"], 32),
    "densenet121": (["features.denseblock1", "features.transition2"], 32),
    "mobilenet_v3_small": (["features.3", "features.9"], 32),
    "efficientnet_b0": (["features.2", "features.6"], 32),
    "convnext_tiny": (["features.1", "features.5"], 32),
}


def _torchvision(name):
    import torchvision

    torch.manual_seed(0)
    if name == "vgg16_bn":  # the real features, a narrow head (the 4096-wide one is slow to make)
        with torch.device("meta"):
            net = torchvision.models.vgg16_bn(num_classes=5)
        net.features = net.features.to_empty(device="cpu")
        for m in net.features.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        net.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 5))
        return net
    return getattr(torchvision.models, name)(num_classes=5)


def _brute_outputs(model, names, images):
    """Every image's output of each layer, by a forward pass of the whole set at once with
    plain forward hooks (no tap, no reduction)."""
    from zfnet_cli.layers import resolve_layer

    outs, handles = {}, []
    for name in names:
        module = resolve_layer(model, name).module
        handles.append(module.register_forward_hook(
            lambda m, i, o, name=name: outs.setdefault(name, o.detach().clone())))
    with torch.no_grad():
        model(images)
    for h in handles:
        h.remove()
    return {n: (o if o.dim() == 4 else o[:, :, None, None]) for n, o in outs.items()}


@pytest.mark.parametrize("name", list(ARCHS))
def test_any_network_matches_brute_force(name):
    layers, size = ARCHS[name]
    model = _torchvision(name)
    model.train()  # scan_top9 reads in eval mode and gives the mode back
    torch.manual_seed(1)
    images = torch.randn(7, 3, size, size)
    top = scan_top9(model, batches_of(images, 3), layers, k=3)
    assert model.training
    everything = _brute_outputs(model.eval(), layers, images)
    for layer in layers:
        expected = brute_force(everything[layer], 3)
        t = top[layer]
        assert t.images.tolist() == [[r[1] for r in recs] for recs in expected], (name, layer)
        assert t.positions.tolist() == [[list(r[2]) for r in recs] for recs in expected]
        torch.testing.assert_close(t.values, torch.tensor([[r[0] for r in recs] for recs in expected]),
                                   rtol=1e-4, atol=1e-5)


def test_gather_without_a_process_group_is_the_identity_and_merges_exactly(net):
    from zfnet_cli.top9 import TopK, _merge, gather_top9

    images = torch.randn(9, 3, 64, 64)
    whole = scan_top9(net, batches_of(images, 4), ["conv2"], k=4)
    assert gather_top9(whole) is whole
    with pytest.raises(ValueError, match="no batches"):
        gather_top9(None)
    # what gather_top9 does across ranks: two strided shards with global indices, merged
    shards = [scan_top9(net, [(images[r::2], torch.arange(9)[r::2])], ["conv2"], k=4,
                        batches_carry_indices=True)["conv2"] for r in (0, 1)]
    best = None
    for t in shards:
        best = _merge(best, (t.values, t.images, t.positions[..., 0], t.positions[..., 1]), 4)
    merged = TopK(best[0], best[1], torch.stack([best[2], best[3]], dim=2))
    assert torch.equal(merged.images, whole["conv2"].images)
    assert torch.equal(merged.positions, whole["conv2"].positions)
