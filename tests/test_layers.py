"""Layers by name (zfnet_cli.layers): the paper's names on plain stacks, module names
everywhere, and the errors."""
import pytest
import torch
import torchvision
from torch import nn

from zfnet_cli.layers import default_layer, describe_layers, layer_names, paper_names, read_once, resolve_layer, tap
from zfnet_cli.model import ModelConfig, ZFNet


def test_paper_names_on_zfnet_follow_its_stages():
    names = paper_names(ZFNet())
    # conv1/conv2: ReLU, pool, then contrast norm (Fig 3); conv3/conv4 end at their ReLU.
    assert names == {"conv1": "features.norm1", "conv2": "features.norm2",
                     "conv3": "features.relu3", "conv4": "features.relu4",
                     "conv5": "features.pool5", "fc6": "classifier.relu6",
                     "fc7": "classifier.relu7", "fc8": "classifier.fc8"}


def test_paper_names_keep_zfnet_numbers_when_layers_are_dropped():
    names = paper_names(ZFNet(ModelConfig(drop=["conv3", "conv4", "fc6"])))
    assert list(names) == ["conv1", "conv2", "conv5", "fc7", "fc8"]


def test_paper_names_on_torchvision_alexnet_are_counted():
    names = paper_names(torchvision.models.alexnet())
    # features: Conv ReLU Pool | Conv ReLU Pool | Conv ReLU | Conv ReLU | Conv ReLU Pool
    assert names["conv1"] == "features.2" and names["conv3"] == "features.7"
    assert names["conv5"] == "features.12"
    # classifier: Dropout Linear ReLU Dropout Linear ReLU Linear
    assert (names["fc6"], names["fc7"], names["fc8"]) == ("classifier.2", "classifier.5",
                                                          "classifier.6")


def test_a_resnet_has_no_paper_names_and_keeps_its_own():
    net = torchvision.models.resnet18()
    assert paper_names(net) == {}
    layer = resolve_layer(net, "layer3.1")
    assert layer.module is net.layer3[1] and layer.module_name == "layer3.1"
    assert "layer3.1" in layer_names(net) and "conv1" in layer_names(net)


def test_unknown_layer_names_close_matches():
    with pytest.raises(ValueError, match=r"unknown layer 'conv6'; did you mean conv5") as e:
        resolve_layer(ZFNet(), "conv6")
    assert "\n" not in str(e.value) and "zfnet layers" in str(e.value)


def test_describe_layers_gives_shapes_and_calls():
    net = torchvision.models.resnet18(num_classes=7)
    rows = {r.module_name: r for r in describe_layers(net, (3, 64, 64))}
    assert rows["layer3.1"].shape == (256, 4, 4) and rows["layer3.1"].calls == 1
    assert rows["layer1.0.relu"].calls == 2  # a BasicBlock calls its one ReLU twice
    assert rows["fc"].shape == (7,)
    zf = {r.paper_name: r for r in describe_layers(ZFNet(), (3, 224, 224)) if r.paper_name}
    assert zf["conv1"].shape == (96, 55, 55) and zf["conv5"].shape == (256, 6, 6)  # Fig 3


def test_tap_reads_before_an_inplace_relu_overwrites():
    net = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.ReLU(inplace=True)).eval()
    nn.init.constant_(net[0].weight, -1.0)
    with tap(net[0], lambda t: t.sum().item()) as seen:
        net(torch.ones(1, 1, 2, 2))
    assert read_once(seen, "0") == -4.0


def test_read_once_names_the_enclosing_module_of_a_shared_relu():
    net = torchvision.models.resnet18().eval()
    layer = resolve_layer(net, "layer1.0.relu")
    with tap(layer.module, lambda t: t.shape) as seen:
        net(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"runs 2 times .* \('layer1.0'\)"):
        read_once(seen, layer)


def test_paper_names_need_a_plain_stack_of_layers():
    # MobileNet / SqueezeNet / DenseNet have a `features` Sequential too, of blocks: no stages
    for build in (torchvision.models.mobilenet_v3_small, torchvision.models.squeezenet1_0):
        assert paper_names(build(num_classes=3)) == {}
    assert "conv8" in paper_names(torchvision.models.vgg11_bn(num_classes=3))


@pytest.mark.parametrize("build, expected", [
    (lambda: ZFNet(), ("conv5", "features.pool5")),  # the paper's "layer 5"
    (lambda: torchvision.models.resnet18(num_classes=3), ("layer4", "layer4")),
    (lambda: torchvision.models.mobilenet_v3_small(num_classes=3), ("features", "features")),
    (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                           nn.Linear(4, 2)), ("1", "1")),  # before the global pooling
    (lambda: nn.Sequential(nn.Conv2d(3, 4, 64), nn.Flatten(), nn.Linear(4, 2)), ("0", "0")),
])
def test_default_layer_is_the_last_feature_map_before_global_pooling(build, expected):
    layer = default_layer(build(), (3, 64, 64))
    assert (layer.name, layer.module_name) == expected
    with pytest.raises(ValueError, match="no module with a 4-D"):
        default_layer(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), (3, 2, 2))


def test_an_error_about_a_default_layer_says_it_was_the_default():
    """A default the model lacks (Fig 5's conv1 / fc7 on a ResNet) is named as the default,
    with what to pass instead; a layer the user named gets the plain error."""
    import torchvision

    from zfnet_cli.layers import resolve_layers

    net = torchvision.models.resnet18()
    with pytest.raises(ValueError) as e:
        resolve_layers(net, ["conv1", "fc7"], default=["conv1", "fc7"])
    assert str(e.value).startswith("the default layers (conv1, fc7: none given) do not all apply "
                                   "to this model: unknown layer 'fc7'")
    assert "pass layers=[NAME,...]" in str(e.value)
    with pytest.raises(ValueError, match=r"^unknown layer 'fc7'"):
        resolve_layers(net, ["layer4", "fc7"], default=["conv1", "fc7"])
    assert [layer.module_name for layer in resolve_layers(net, ["conv1", net.layer4])] == [
        "conv1", "layer4"]  # a module stands for itself
