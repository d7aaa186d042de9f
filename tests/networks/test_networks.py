"""Networks: every architecture builds, exposes its parts, and loads weights safely."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from unlearn_pl.networks import NETWORKS, build_network, load_network_weights


@pytest.mark.parametrize("arch", sorted(NETWORKS))
@pytest.mark.parametrize("in_channels", [1, 3])
def test_every_network_exposes_features_and_classifier(arch: str, in_channels: int) -> None:
    net = build_network(arch, num_classes=5, in_channels=in_channels, small_input=True).eval()
    x = torch.rand(2, in_channels, 32, 32)
    embedding = net.embed(x)
    assert embedding.dim() == 2 and embedding.shape[1] == net.classifier.in_features
    torch.testing.assert_close(net(x), net.classifier(embedding))
    assert net.num_classes == 5
    assert net.blocks()[-1] is net.classifier
    # Blocks cover distinct parameters, in forward order.
    seen: set[int] = set()
    for block in net.blocks():
        ids = {id(p) for p in block.parameters()}
        assert ids and not ids & seen
        seen |= ids


def test_normalisation_lives_in_the_network() -> None:
    net = build_network("tiny_cnn", 3, in_channels=1, mean=[0.25], std=[0.5])
    assert net.state_dict()["normalize.mean"].flatten().tolist() == [0.25]
    x = torch.full((1, 1, 8, 8), 0.25)
    torch.testing.assert_close(net.normalize(x), torch.zeros_like(x))


def test_reinitialize_uses_the_architectures_init() -> None:
    net = build_network("resnet18", 4)
    bn = net.features.bn1
    with torch.no_grad():
        bn.weight.fill_(3.0)
    net.reinitialize(net.blocks()[0])
    assert torch.all(bn.weight == 1.0)


def test_original_weights_round_trip_and_mismatches_are_named(tmp_path: Path) -> None:
    net = build_network("tiny_cnn", 4)
    path = tmp_path / "net.pt"
    torch.save(net.state_dict(), path)
    other = build_network("tiny_cnn", 4)
    load_network_weights(other, path)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(other.state_dict()[key], value)
    with pytest.raises(ValueError, match="4 outputs but this run has 7 classes"):
        load_network_weights(build_network("tiny_cnn", 7), path)
    with pytest.raises(ValueError, match="does not match"):
        load_network_weights(build_network("allcnn", 4, width=0.1), path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_network_weights(net, tmp_path / "missing.pt")


def test_lightning_checkpoint_of_another_arch_is_refused(original_ckpt: str) -> None:
    with pytest.raises(ValueError, match="holds a 'tiny_cnn' network"):
        load_network_weights(build_network("allcnn", 4, width=0.1), original_ckpt,
                             arch="allcnn")


def test_unknown_arch_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="choose one of"):
        build_network("vgg99", 10)
