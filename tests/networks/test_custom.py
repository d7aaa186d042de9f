"""Your own network: given by class path, its classifier found, its weights loaded from the
files users have, and refused with the fix when it cannot be used."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from unlearn_pl.networks import build_network, load_network_weights, wrap_network

RESNET = {"class_path": "torchvision.models.resnet18"}


class HeadInside(nn.Module):
    """A user's network whose classifier sits inside a container: ``head.1``."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten())
        self.project = nn.Linear(8, 8)
        self.head = nn.Sequential(nn.Dropout(0.1), nn.Linear(8, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.project(self.body(x)))


class SoftmaxAfter(HeadInside):
    """Something after the last linear layer: no linear layer gives the output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).softmax(1)


def plain(network: nn.Module) -> nn.Module:
    """Identity normalisation, so the wrapped network computes what the bare one does."""
    network.normalize.mean.zero_()
    network.normalize.std.fill_(1)
    return network.eval()


def test_torchvision_network_by_class_path_is_split_at_its_classifier() -> None:
    net = build_network("unused", 4, network=RESNET, input_size=[16, 16])
    assert net.head_path == "fc" and net.num_classes == 4  # num_classes passed for us
    assert net.blocks()[-1] is net.classifier
    assert [n for names in net._block_names for n in names] == [
        "conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]
    x = torch.rand(3, 3, 16, 16)
    torch.testing.assert_close(plain(net)(x), net.classifier(net.embed(x)))


def test_classifier_inside_a_container_is_found_and_can_be_named() -> None:
    found = wrap_network(HeadInside(), 4, 3, [0.5] * 3, [0.5] * 3)
    assert found.head_path == "head.1"  # not ``project``, the other linear layer
    named = wrap_network(HeadInside(), 4, 3, [0.5] * 3, [0.5] * 3, classifier="head.1")
    assert named.head_path == "head.1"
    with pytest.raises(ValueError, match="'project' does not produce the network's output"):
        wrap_network(HeadInside(), 4, 3, [0.5] * 3, [0.5] * 3, classifier="project")
    with pytest.raises(ValueError, match="'body.0' is not an nn.Linear.*'project', 'head.1'"):
        wrap_network(HeadInside(), 4, 3, [0.5] * 3, [0.5] * 3, classifier="body.0")


@pytest.mark.parametrize("network, message", [
    (SoftmaxAfter(), "found no final linear classifier.*model.classifier"),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()),
     r"found no final linear classifier: .*\(its linear layers: none\)"),
    ({"class_path": "torchvision.models.no_such_net"}, "unknown network class path"),
    ({"class_path": "torchvision.models.resnet18", "init_args": {"num_classes": 7}},
     "has 7 outputs but the dataset has 4 classes"),
    ({"class_path": "torchvision.models.resnet18", "init_args": {"depth": 3}},
     r"resnet18\(\*\*.*failed.*fix network.init_args"),
    ({"class_path": "torchvision.models.resnet18", "weights": "DEFAULT"},
     "keys \\['weights'\\] beside class_path"),
])
def test_unusable_networks_are_refused_with_the_fix(network: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        wrap_network(network, 4, 3, [0.5] * 3, [0.5] * 3)  # type: ignore[arg-type]


def test_a_network_that_cannot_take_the_images_names_channels_and_size() -> None:
    with pytest.raises(ValueError, match="cannot classify 1-channel 16×16 images.*num_channels"):
        build_network("unused", 4, in_channels=1, network=RESNET, input_size=[16, 16])


def _bare_resnet() -> nn.Module:
    torch.manual_seed(1)
    return torchvision.models.resnet18(num_classes=4).eval()


def test_torchvision_weights_file_and_safetensors_load(tmp_path: Path) -> None:
    bare = _bare_resnet()
    x = torch.rand(2, 3, 16, 16)
    torch.save(bare.state_dict(), tmp_path / "resnet18.pth")
    files = [tmp_path / "resnet18.pth"]
    safetensors = pytest.importorskip("safetensors.torch")
    safetensors.save_file({k: v.contiguous() for k, v in bare.state_dict().items()},
                          str(tmp_path / "model.safetensors"))
    files.append(tmp_path / "model.safetensors")
    for path in files:
        net = plain(build_network("unused", 4, network=RESNET))
        load_network_weights(net, path)
        torch.testing.assert_close(net(x), bare(x))


def test_own_lightning_checkpoint_loads_under_its_attribute_prefix(tmp_path: Path) -> None:
    bare = _bare_resnet()
    state = {f"model.{k}": v for k, v in bare.state_dict().items()}
    state["criterion.weight"] = torch.ones(4)  # another part of the user's LightningModule
    torch.save({"state_dict": state, "hyper_parameters": {"arch": "resnet50", "lr": 0.1},
                "epoch": 3}, tmp_path / "mine.ckpt")
    net = plain(build_network("unused", 4, network=RESNET))
    # Its hyperparameters are the user's module's: an "arch" there means nothing to us.
    load_network_weights(net, tmp_path / "mine.ckpt", "torchvision.models.resnet18")
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(net(x), bare(x))
    # The same weights twice (an EMA copy): which one to unlearn is the user's choice.
    state |= {f"ema.{k}": v for k, v in bare.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "two.ckpt")
    with pytest.raises(ValueError, match=r"several prefixes \['ema.', 'model.'\]"):
        load_network_weights(net, tmp_path / "two.ckpt")


def test_weights_that_do_not_fit_are_listed(tmp_path: Path) -> None:
    state = _bare_resnet().state_dict()
    state["layer4.1.conv2.weight"] = torch.zeros(512, 512, 1, 1)
    del state["layer4.1.bn2.running_var"]
    torch.save(state, tmp_path / "bad.pth")
    net = build_network("unused", 4, network=RESNET)
    with pytest.raises(ValueError) as error:
        load_network_weights(net, tmp_path / "bad.pth")
    message = str(error.value)
    assert "missing ['features.layer4.1.bn2.running_var']" in message
    assert "features.layer4.1.conv2.weight: file (512, 512, 1, 1), network (512, 512, 3, 3)" \
        in message
    torch.save(torchvision.models.resnet18(num_classes=9).state_dict(), tmp_path / "nine.pth")
    with pytest.raises(ValueError, match="has 9 outputs but this run has 4 classes"):
        load_network_weights(net, tmp_path / "nine.pth")


def test_builtin_arch_loads_a_torchvision_weights_file(tmp_path: Path) -> None:
    torch.save(torchvision.models.resnet18(num_classes=4).state_dict(), tmp_path / "tv.pth")
    net = build_network("resnet18", 4)
    load_network_weights(net, tmp_path / "tv.pth", "resnet18")
    torch.testing.assert_close(net.classifier.weight,
                               torch.load(tmp_path / "tv.pth", weights_only=True)["fc.weight"])
