"""The worked examples of docs/user-guide/own-model.md, run from the YAML on that page on tiny
data: a torchvision ResNet-50 from a state dict on an image folder, and a timm network from a
user's own Lightning checkpoint on a torchvision Dataset."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from lightning.pytorch import LightningModule, Trainer
from PIL import Image
from torch.utils.data import DataLoader

from tests.conftest import REPO
from unlearn_pl.cli import run_cli

GUIDE = REPO / "docs" / "user-guide" / "own-model.md"
CLASSES = ("cat", "dog", "owl")


def guide_yaml(title: str) -> str:
    """The YAML block of the guide titled ``title``."""
    found = re.search(rf'```yaml title="{re.escape(title)}"\n(.*?)```', GUIDE.read_text(),
                      re.DOTALL)
    assert found, f"no {title} block in {GUIDE}"
    return found.group(1)


@pytest.fixture
def my_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``my_images/{train,test}/<class>/*.png`` in a fresh working folder."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("test", 10)):
        for label, name in enumerate(CLASSES):
            folder = tmp_path / "my_images" / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = rng.random((32, 32, 3)) * 0.5 + 0.25 * label
                Image.fromarray((pixels * 255).astype(np.uint8)).save(folder / f"{index}.png")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["unlearn-pl"])
    return tmp_path


def run(method: str, config: str, root: Path, *extra: str) -> object:
    return run_cli(["fit", "--config", str(REPO / "configs" / "trainer" / "cpu.yaml"),
                    "--config", str(REPO / "configs" / "methods" / f"{method}.yaml"),
                    "--config", config, "--trainer.logger.init_args.save_dir", str(root),
                    "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
                    "--trainer.enable_progress_bar", "false",
                    "--trainer.enable_model_summary", "false",
                    *extra])


def test_torchvision_resnet50_from_its_state_dict(my_images: Path) -> None:
    torch.manual_seed(0)
    mine = torchvision.models.resnet50(num_classes=3)
    torch.save(mine.state_dict(), "my_resnet50.pth")
    Path("request.txt").write_text("0\n4\n9\n13\n")
    Path("resnet50.yaml").write_text(guide_yaml("resnet50.yaml"))
    built = run_cli(["--config", str(REPO / "configs" / "methods" / "finetune.yaml"),
                     "--config", "resnet50.yaml"], run=False)
    network = built.model.network  # type: ignore[attr-defined]
    torch.testing.assert_close(network.features.conv1.weight, mine.conv1.weight)
    torch.testing.assert_close(network.classifier.weight, mine.fc.weight)
    assert network.normalize.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    cli = run("finetune", "resnet50.yaml", my_images / "runs" / "request1")
    trainer = cli.trainer  # type: ignore[attr-defined]
    assert trainer.state.finished
    checkpoint = torch.load(trainer.checkpoint_callback.last_model_path, weights_only=True)
    assert checkpoint["hyper_parameters"]["network"] == {
        "class_path": "torchvision.models.resnet50"}  # plain values, as given
    assert cli.datamodule.split_ids()["forget"] == [0, 4, 9, 13]  # type: ignore[attr-defined]
    tested = run_cli(["test", "--config", str(Path(trainer.log_dir) / "config.yaml"),
                      "--ckpt_path", trainer.checkpoint_callback.last_model_path,
                      "--trainer.default_root_dir", str(my_images / "runs" / "test")])
    assert "test/acc_forget" in tested.trainer.callback_metrics


class MyModule(LightningModule):
    """A user's own LightningModule: the timm network is its ``model`` attribute."""

    def __init__(self) -> None:
        super().__init__()
        import timm

        self.model = timm.create_model("mobilenetv3_small_050", num_classes=3)
        self.criterion = torch.nn.CrossEntropyLoss(weight=torch.ones(3))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        images, targets = batch
        return self.criterion(self.model(images), targets)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_timm_network_from_its_own_lightning_checkpoint(my_images: Path) -> None:
    pytest.importorskip("timm")
    data = torchvision.datasets.ImageFolder(
        "my_images/train", transform=torchvision.transforms.ToTensor())
    mine = MyModule()
    trainer = Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(mine, DataLoader(data, batch_size=8))
    trainer.save_checkpoint("mine.ckpt")
    Path("timm.yaml").write_text(guide_yaml("timm.yaml"))
    built = run_cli(["--config", str(REPO / "configs" / "methods" /
                                            "boundary_shrink.yaml"), "--config", "timm.yaml"],
                    run=False)
    network = built.model.network  # type: ignore[attr-defined]
    assert network.head_path == "classifier"
    torch.testing.assert_close(network.classifier.weight, mine.model.classifier.weight)
    cli = run("boundary_shrink", "timm.yaml", my_images / "runs" / "timm")
    assert cli.trainer.state.finished  # type: ignore[attr-defined]
    assert set(cli.datamodule.splits["forget"][1].tolist()) == {2}  # type: ignore[attr-defined]
