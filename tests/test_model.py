"""The model against Fig 3 (shapes, parameter count) and §3 (init, filter renormalisation)."""
import pytest
import torch
from torch import nn

from zfnet_cli.model import (ModelConfig, SwitchMaxPool2d, ZFNet, conv_output_size, count_parameters,
                             renormalize_filters)


def _shapes(model, size):
    """Output shape of every named module of ``features`` for one image."""
    shapes, x = {}, torch.zeros(1, 3, size, size)
    for name, m in model.features.named_children():
        x = m(x)
        shapes[name] = tuple(x.shape[1:])
    return shapes


def test_fig3_shapes_at_224():
    s = _shapes(ZFNet(ModelConfig()), 224)
    assert s["conv1"] == (96, 110, 110)
    assert s["pool1"] == (96, 55, 55)
    assert s["conv2"] == (256, 26, 26)
    assert s["pool2"] == (256, 13, 13)
    assert s["conv3"] == (384, 13, 13)
    assert s["conv4"] == (384, 13, 13)
    assert s["conv5"] == (256, 13, 13)
    assert s["pool5"] == (256, 6, 6)


def test_layer_outputs_and_logits():
    model = ZFNet(ModelConfig(), num_classes=17)  # not 1000, so a head bug would show
    model.eval()
    out = model.layer_outputs(torch.randn(2, 3, 224, 224))
    assert [k for k in out] == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    assert out["conv1"].shape == (2, 96, 55, 55)
    assert out["conv5"].shape == (2, 256, 6, 6)
    assert out["fc7"].shape == (2, 4096)
    assert out["fc8"].shape == (2, 17)
    assert (out["fc7"] >= 0).all()  # after relu7


def test_parameter_count_is_the_papers():
    # weights + biases of each layer, from Fig 3's table, written out by hand
    conv = [96 * 3 * 7 * 7 + 96, 256 * 96 * 5 * 5 + 256, 384 * 256 * 9 + 384,
            384 * 384 * 9 + 384, 256 * 384 * 9 + 256]
    fc = [256 * 6 * 6 * 4096 + 4096, 4096 * 4096 + 4096, 4096 * 1000 + 1000]
    n = count_parameters(ZFNet(ModelConfig()))
    assert n == sum(conv) + sum(fc) == 62_357_608  # "about 62.4M"


def test_forward_matches_layer_outputs_in_eval():
    torch.manual_seed(0)
    model = ZFNet(ModelConfig(input_size=64, channels=[8, 16, 16, 16, 16], fc_widths=[32, 32]), 5).eval()
    x = torch.randn(3, 3, 64, 64)
    torch.testing.assert_close(model(x), model.layer_outputs(x)["fc8"])


def test_paper_init():
    torch.manual_seed(0)
    model = ZFNet(ModelConfig())
    w = model.classifier.fc6.weight
    assert abs(w.std().item() - 0.01) < 2e-4 and abs(w.mean().item()) < 2e-4
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert torch.count_nonzero(m.bias) == 0


def test_renormalisation_hand_case():
    conv = nn.Conv2d(1, 3, 2, bias=False)
    with torch.no_grad():
        conv.weight[0] = 0.2  # RMS 0.2 -> rescaled to 0.1
        conv.weight[1] = torch.tensor([[0.05, -0.05], [0.05, -0.05]])  # RMS 0.05 -> kept
        conv.weight[2] = torch.tensor([[0.4, 0.0], [0.0, 0.0]])  # RMS 0.2 -> halved
    renormalize_filters(conv, 0.1)
    assert torch.allclose(conv.weight[0], torch.full((1, 2, 2), 0.1))
    assert torch.equal(conv.weight[1], torch.tensor([[[0.05, -0.05], [0.05, -0.05]]]))
    assert torch.allclose(conv.weight[2], torch.tensor([[[0.2, 0.0], [0.0, 0.0]]]))


def test_renormalisation_bounds_every_conv_filter_and_leaves_fc():
    torch.manual_seed(0)
    model = ZFNet(ModelConfig(input_size=64, channels=[8, 16, 16, 16, 16], fc_widths=[32, 32]), 5)
    for p in model.parameters():
        p.data.normal_(0, 1.0)
    fc_before = model.classifier.fc6.weight.clone()
    renormalize_filters(model, 0.1)
    for m in model.features:
        if isinstance(m, nn.Conv2d):
            rms = m.weight.flatten(1).pow(2).mean(1).sqrt()
            assert torch.allclose(rms, torch.full_like(rms, 0.1), atol=1e-6)
    assert torch.equal(model.classifier.fc6.weight, fc_before)


def test_switch_pool_returns_the_argmax():
    pool = SwitchMaxPool2d(2, 2)
    x = torch.tensor([[[[1., 5., 2., 0.], [3., 4., 8., 1.], [0., 0., 1., 1.], [9., 0., 1., 2.]]]])
    y, switches = pool.forward_with_switches(x)
    assert torch.equal(y, torch.tensor([[[[5., 8.], [9., 2.]]]]))
    assert torch.equal(switches, torch.tensor([[[[1, 6], [12, 15]]]]))
    assert torch.equal(pool(x), y)


def test_alexnet_config_sizes():
    cfg = ModelConfig(kernels=[11, 5, 3, 3, 3], strides=[4, 1, 1, 1, 1], paddings=[2, 2, 1, 1, 1],
                      lrn_before_pool=True)
    model = ZFNet(cfg)
    s = _shapes(model, 224)
    assert s["conv1"] == (96, 55, 55) and s["pool1"] == (96, 27, 27)
    assert s["pool2"] == (256, 13, 13) and s["pool5"] == (256, 6, 6)
    names = [n for n, _ in model.features.named_children()]
    assert names.index("norm1") < names.index("pool1")  # Krizhevsky's order


@pytest.mark.parametrize("drop", [["conv3", "conv4"], ["fc7"], ["fc6", "fc7"], ["conv3", "conv4", "fc6", "fc7"]])
def test_table3_variants(drop):
    model = ZFNet(ModelConfig(input_size=64, channels=[8, 16, 16, 16, 16], fc_widths=[32, 32], drop=drop), 4)
    names = dict(model.named_modules())
    for layer in drop:
        assert f"features.{layer}" not in names and f"classifier.{layer}" not in names
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 4)


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="conv2"):
        ZFNet(ModelConfig(drop=["conv2"]))
    with pytest.raises(ValueError, match="channels"):
        ZFNet(ModelConfig(channels=[1, 2]))
    with pytest.raises(ValueError, match="too small"):
        ZFNet(ModelConfig(input_size=16))


def test_conv_output_size_matches_torch():
    for size in range(20, 80, 7):
        for k, s, p, ceil in [(7, 2, 1, False), (3, 2, 0, True), (5, 2, 0, False), (3, 2, 1, True)]:
            layer = nn.MaxPool2d(k, s, p, ceil_mode=ceil) if ceil else nn.Conv2d(1, 1, k, s, p)
            assert layer(torch.zeros(1, 1, size, size)).shape[-1] == conv_output_size(size, k, s, p, ceil)
