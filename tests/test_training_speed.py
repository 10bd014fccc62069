"""What makes training cheaper must not change what it learns from: the decoded-image cache,
loader workers on a CPU run, channels-last weights and the wall-clock-aware schedules."""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from defects.channels_last import ChannelsLast
from defects.data.cache import DecodedCache
from defects.data.detection import DetectionDataModule
from defects.data.loaders import loader_workers
from defects.data.segmentation import SegmentationDataModule
from defects.kinds.schedule import budget_share, warmup_cosine
from defects.kinds.yolo.recipe import Warmup

CLASSES = ["porosity", "crack", "lack_of_fusion", "slag_inclusion"]
MOSAIC_AUGMENT = [
    {"_target_": "albumentations.LongestMaxSize", "max_size": 64},
    {"_target_": "defects.data.transforms.canvas_mosaic", "size": 64},
    {"_target_": "albumentations.Affine", "scale": [0.5, 1.5], "fill": 114, "p": 1.0},
    {"_target_": "albumentations.CenterCrop", "height": 64, "width": 64},
    {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
]


# ---------------------------------------------------------------- the decoded-image cache
def test_cache_decodes_once_within_its_budget_and_hands_out_read_only_arrays() -> None:
    loads = []

    def load(value: int) -> np.ndarray:
        loads.append(value)
        return np.full((10, 10), value, dtype=np.uint8)  # 100 bytes

    cache = DecodedCache(budget_mb=250 / 2**20)  # room for two arrays
    first = cache.get("a", lambda: load(1))
    assert cache.get("a", lambda: load(99)) is first and loads == [1]
    assert not first.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        first[0, 0] = 7
    cache.get("b", lambda: load(2))
    third = cache.get("c", lambda: load(3))  # over budget: returned, not kept
    assert third.flags.writeable and cache.used == 200
    cache.get("c", lambda: load(3))
    assert loads == [1, 2, 3, 3]
    assert pickle.loads(pickle.dumps(cache)).arrays == {}  # a loader worker starts empty
    with pytest.raises(ValueError, match="cache_mb"):
        DecodedCache(-1)


def detection_items(root: Path, cache_mb: float, epochs: int = 2) -> list:
    dm = DetectionDataModule(
        str(root), CLASSES, channels=1, augment=MOSAIC_AUGMENT, seed=3, cache_mb=cache_mb
    )
    dm.setup("fit")
    train = dm.datasets["train"]
    items = []
    for epoch in range(epochs):
        torch.manual_seed(epoch)  # what Lightning's seeding gives each epoch's draws
        items += [train[i] for i in range(len(train))]
    return items


def test_cached_mosaic_training_pictures_equal_decoded_ones(weld_root: Path) -> None:
    """Two epochs of mosaic pictures with and without the cache, bit for bit: the cached
    pictures are neither different nor changed by the augmentations that read them."""
    plain, cached = detection_items(weld_root, 0), detection_items(weld_root, 1024)
    assert len(plain) == len(cached) > 0
    for (a_image, a_target), (b_image, b_target) in zip(plain, cached, strict=True):
        assert torch.equal(a_image, b_image)
        assert torch.equal(a_target["boxes"], b_target["boxes"])


def test_cached_segmentation_items_equal_decoded_ones(steel_root: Path) -> None:
    def items(cache_mb: float) -> list:
        dm = SegmentationDataModule(
            str(steel_root),
            CLASSES,
            shape=[64, 320],
            crop=[64, 128],
            cache_mb=cache_mb,
            seed=5,
        )
        dm.setup("fit")
        out = []
        for split, train in (("train", True), ("valid", False)):
            dataset = dm.dataset(split)
            for _ in range(2):
                dataset.transform = dm.transform(train)  # the same draws both times
                out += [dataset[i] for i in range(len(dataset))]
        return out

    for (a_image, a_masks), (b_image, b_masks) in zip(items(0), items(1024), strict=True):
        assert torch.equal(a_image, b_image) and torch.equal(a_masks, b_masks)


def test_segmentation_crops_pad_images_smaller_than_the_crop(tmp_path: Path) -> None:
    from PIL import Image

    for split in ("train", "valid"):
        (tmp_path / split / "images").mkdir(parents=True)
        (tmp_path / split / "masks").mkdir()
        Image.fromarray(np.full((40, 90), 128, np.uint8)).save(tmp_path / split / "images/a.png")
        mask = np.zeros((40, 90), np.uint8)
        mask[10:20, 30:50] = 1
        Image.fromarray(mask).save(tmp_path / split / "masks/a.png")
    dm = SegmentationDataModule(str(tmp_path), ["blowhole"], layout="masks", crop=[64, 64])
    dm.setup("fit")
    image, masks = dm.dataset("train")[0]
    assert image.shape == (1, 64, 64) and masks.shape == (1, 64, 64)
    assert 0 < float(masks.sum()) <= 200 * 2  # the defect, mirrored at most once by the pad


# ---------------------------------------------------------------- loader workers
def test_auto_workers_leave_a_cpu_run_in_one_process() -> None:
    from lightning.pytorch.accelerators import CPUAccelerator

    assert loader_workers("auto") == 0
    assert loader_workers("auto", SimpleNamespace(accelerator=CPUAccelerator())) == 0
    accelerated = loader_workers("auto", SimpleNamespace(accelerator=object()))
    assert 0 <= accelerated <= 4
    assert loader_workers(3) == 3
    with pytest.raises(ValueError, match="num_workers"):
        loader_workers(-1)
    with pytest.raises(ValueError):
        DetectionDataModule("x", CLASSES, num_workers="many")


# ---------------------------------------------------------------- channels-last
class ConvModule(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)  # one channel would be both layouts
        self.seen: list[bool] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.seen.append(self.conv.weight.is_contiguous(memory_format=torch.channels_last))
        return self.conv(batch).square().mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit_conv(callbacks: list) -> ConvModule:
    torch.manual_seed(0)
    module = ConvModule()
    data = torch.utils.data.DataLoader(torch.rand(6, 2, 8, 8), batch_size=2)
    L.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    ).fit(module, data)
    return module


def test_channels_last_while_fitting_then_the_default_layout_and_the_same_weights() -> None:
    fast, plain = fit_conv([ChannelsLast()]), fit_conv([])
    assert fast.seen == [True] * 6 and plain.seen == [False] * 6
    assert fast.conv.weight.is_contiguous()  # back for checkpoints and export
    torch.testing.assert_close(fast.conv.weight, plain.conv.weight)


# ---------------------------------------------------------------- schedules that see the budget
def test_schedules_follow_the_wall_clock_budget_when_it_is_further_along() -> None:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    used = {"share": 0.0}
    schedule = warmup_cosine(optimizer, 1000, warmup_steps=0, budget=lambda: used["share"])
    factor = schedule.lr_lambdas[0]
    assert factor(10) == pytest.approx(warmup_cosine(optimizer, 1000, 0).lr_lambdas[0](10))
    used["share"] = 0.5
    assert factor(10) == pytest.approx(0.05 + 0.95 * 0.5)  # cosine at half way
    used["share"] = 1.0
    assert factor(10) == pytest.approx(0.05)  # budget spent: the floor
    assert factor(999) == pytest.approx(0.05)

    warm = Warmup(lr=0.01, epochs=100, iters_per_epoch=10, lrf=0.01)
    assert warm.epoch_factor(10) == pytest.approx(0.9 * 0.99 + 0.01)
    assert warm.epoch_factor(10, budget=0.5) == pytest.approx(0.5 * 0.99 + 0.01)
    assert warm.epoch_factor(60, budget=0.5) == pytest.approx(0.4 * 0.99 + 0.01)


def test_budget_share_reads_lightnings_timer() -> None:
    assert budget_share(L.Trainer(logger=False)) is None
    trainer = L.Trainer(logger=False, max_time="00:00:10:00")
    share = budget_share(trainer)
    assert share is not None and 0.0 <= share() < 0.01
