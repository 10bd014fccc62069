"""Detection data in the `{train,valid,test}/{images,labels}` YOLO layout (weld, winding).

An image with no label file, or an empty one, is a defect-free image. Every label and every
image is checked when a split is set up, so bad input fails before training starts, naming
the file and line; with `strict: false` it is skipped, counted and reported instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from defects.data.cache import DecodedCache
from defects.data.images import list_images, read_image
from defects.data.loaders import ResumableLoader, loader_workers
from defects.data.transforms import build_transform, to_tensor
from defects.formats.errors import FormatError, SkipReport, handle
from defects.formats.yolo import read_class_names, read_yolo_labels

log = logging.getLogger("defects")


@dataclass(frozen=True)
class DetectionSample:
    """One image and its boxes (pascal_voc pixels, 0-based class ids)."""

    image: Path
    boxes: np.ndarray
    labels: np.ndarray


def scan_split(
    root: str | Path,
    split: str,
    num_classes: int,
    channels: int = 1,
    strict: bool = True,
    report: SkipReport | None = None,
    verify_images: bool = True,
) -> list[DetectionSample]:
    """Read one split's images and labels, validating both."""
    split_dir = Path(root) / split
    images_dir, labels_dir = split_dir / "images", split_dir / "labels"
    if not split_dir.is_dir():
        raise FormatError(split_dir, f"split folder '{split}' is missing (expected {split}/images)")
    if not images_dir.is_dir():
        raise FormatError(images_dir, "images folder is missing")
    images = list_images(images_dir)
    if not images:
        raise FormatError(images_dir, f"split '{split}' is empty: no images found")
    if labels_dir.is_dir():
        stems = {p.stem for p in images}
        for orphan in sorted(labels_dir.glob("*.txt")):
            if orphan.stem not in stems:
                handle(FormatError(orphan, "label file has no matching image"), strict, report)
    else:
        log.warning("%s: no labels folder; every image of '%s' is defect-free", split_dir, split)

    samples = []
    for image_path in images:
        try:
            boxes = read_yolo_labels(
                labels_dir / f"{image_path.stem}.txt", num_classes, strict, report
            )
            if verify_images or boxes:
                height, width = read_image(image_path, channels).shape[:2]
        except FormatError as error:
            handle(error, strict, report)
            continue
        xyxy = np.array([b.to_xyxy(width, height) for b in boxes], dtype=np.float32).reshape(-1, 4)
        labels = np.array([b.class_id for b in boxes], dtype=np.int64)
        samples.append(DetectionSample(image_path, xyxy, labels))
    if not samples:
        raise FormatError(
            images_dir, f"split '{split}' has no usable image after skipping bad ones"
        )
    return samples


class DetectionDataset(Dataset):
    """Yields `(image [C,H,W] float in 0..1, target)` with torchvision detection targets.

    Target labels are 1-based because class 0 is the detector's background.
    """

    def __init__(
        self,
        samples: Sequence[DetectionSample],
        channels: int,
        transform: Any = None,
        mixup: float = 0.0,
        seed: int = 0,
        cache: DecodedCache | None = None,
    ):
        self.samples = list(samples)
        self.cache = cache or DecodedCache(0)
        self.channels = channels
        self.transform = transform
        self.mixup = float(mixup)
        self.seed = seed
        self.mosaic = MosaicSwitch(transform)

    def __len__(self) -> int:
        return len(self.samples)

    def _image(self, index: int) -> np.ndarray:
        path = self.samples[index].image
        return self.cache.get(path, lambda: read_image(path, self.channels))

    def _augmented(self, index: int, rng: Any) -> tuple[np.ndarray, ...]:
        sample = self.samples[index]
        image = self._image(index)
        boxes, labels = sample.boxes, sample.labels
        if self.transform is None:
            return image, boxes, labels
        extra = {}
        if self.mosaic.key:
            self.mosaic.sync()  # this process's copy of the pipeline follows the shared flag
            others = rng.choice(len(self.samples), size=self.mosaic.cells - 1)
            extra[self.mosaic.key] = [self._raw(int(i)) for i in others] if self.mosaic.on else []
        out = self.transform(image=image, bboxes=boxes, labels=labels, **extra)
        return (
            out["image"],
            np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4),
            np.asarray(out["labels"], dtype=np.int64),
        )

    def _raw(self, index: int) -> dict[str, np.ndarray]:
        sample = self.samples[index]
        image = self._image(index)
        return {"image": image, "bboxes": sample.boxes, "labels": sample.labels}

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rng = None
        if self.mosaic.key or self.mixup > 0:
            # Per-item RNG from torch's (seeded per worker by Lightning): reproducible draws.
            rng = np.random.default_rng([self.seed, index, int(torch.randint(1 << 30, ()))])
        image, boxes, labels = self._augmented(index, rng)
        if rng is not None and self.mixup > 0 and self.mosaic.on and rng.random() < self.mixup:
            other, other_boxes, other_labels = self._augmented(
                int(rng.integers(len(self.samples))), rng
            )
            if other.shape == image.shape:  # MixUp: a Beta(32, 32) blend, both boxes kept
                lam = rng.beta(32.0, 32.0)
                image = (image * lam + other * (1 - lam)).round().astype(np.uint8)
                boxes = np.concatenate([boxes, other_boxes])
                labels = np.concatenate([labels, other_labels])
        tensor = to_tensor(image)
        target = {
            "boxes": torch.from_numpy(boxes).float(),
            "labels": torch.from_numpy(labels).long() + 1,
            "image_id": torch.tensor(index),
        }
        return tensor, target


class MosaicSwitch:
    """Whether a pipeline's albumentations `Mosaic` is on, shared with loader workers.

    Mosaic needs other images passed in (its metadata key); close-mosaic turns it off for the
    last epochs. The flag lives in shared memory, so persistent workers see the switch.
    """

    def __init__(self, transform: Any):
        import albumentations as A

        found = [t for t in getattr(transform, "transforms", []) if isinstance(t, A.Mosaic)]
        self.key = found[0].metadata_key if found else None
        self.cells = int(np.prod(found[0].grid_yx)) if found else 0
        self._on = torch.ones(1, dtype=torch.bool).share_memory_()
        self._transforms = found
        self._p = [t.p for t in found]

    @property
    def on(self) -> bool:
        return bool(self._on[0])

    def set(self, on: bool) -> None:
        self._on[0] = on
        self.sync()

    def sync(self) -> None:
        for t, p in zip(self._transforms, self._p, strict=True):
            t.p = p if self.on else 0.0


def collate_detection(batch: list) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Detection images differ in size and box count: keep them as lists."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


class DetectionDataModule(ResumableLoader, L.LightningDataModule):
    """YOLO-layout detection data for any detection task; what differs lives in config."""

    def __init__(
        self,
        root: str,
        class_names: list[str],
        batch_size: int = 4,
        num_workers: int | str = "auto",
        channels: int = 1,
        augment: list[Any] | None = None,
        strict: bool = True,
        verify_images: bool = True,
        seed: int = 0,
        mixup: float = 0.0,
        min_visibility: float = 0.3,
        min_box_px: float = 0.0,
        cache_mb: float = 1024,
    ):
        super().__init__()
        self.cache_mb = cache_mb
        DecodedCache(cache_mb)  # a bad value fails here
        self.root = Path(root)
        self.class_names = list(class_names)
        self.batch_size = batch_size
        loader_workers(num_workers)  # a bad value fails here, not at the first epoch
        self.num_workers = num_workers
        self.channels = channels
        self.augment = augment
        self.strict = strict
        self.verify_images = verify_images
        self.seed = seed
        self.mixup = mixup
        self.box_filter = {"min_visibility": min_visibility, "min_box_px": min_box_px}
        self.report = SkipReport()
        self.datasets: dict[str, DetectionDataset] = {}

    def _check_class_names(self) -> None:
        names_file = self.root / "data.yaml"
        if names_file.exists():
            names = read_class_names(names_file)
            if names != self.class_names:
                raise FormatError(
                    names_file,
                    f"names {names} differ from the configured class_names {self.class_names}",
                )

    def _load(self, split: str) -> DetectionDataset:
        if split not in self.datasets:
            if not self.root.is_dir():
                raise FormatError(
                    self.root, "dataset folder does not exist (run the prepare stage?)"
                )
            self._check_class_names()
            before = (self.report.count, self.report.clipped_count)
            samples = scan_split(
                self.root,
                split,
                len(self.class_names),
                self.channels,
                self.strict,
                self.report,
                self.verify_images,
            )
            if (self.report.count, self.report.clipped_count) != before:
                log.warning("%s/%s: %s", self.root, split, self.report.summary())
            augment = self.augment if split == "train" else None
            transform = (
                build_transform(augment, bbox=True, seed=self.seed, **self.box_filter)
                if augment
                else None
            )
            mixup = self.mixup if split == "train" else 0.0
            self.datasets[split] = DetectionDataset(
                samples, self.channels, transform, mixup, self.seed, DecodedCache(self.cache_mb)
            )
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "valid"), "validate": ("valid",), "test": ("test",)}
        for split in wanted.get(stage or "fit", ("train", "valid")):
            self._load(split)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        workers = loader_workers(self.num_workers, self.trainer)
        return DataLoader(
            self._load(split),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=workers,
            persistent_workers=workers > 0,
            collate_fn=collate_detection,
            generator=generator,
        )

    def eval_samples(self, split: str) -> list[DetectionSample]:
        """The split's samples as stored (original images, boxes in their pixels)."""
        return self._load(split).samples

    @staticmethod
    def truth(sample: DetectionSample) -> dict[str, np.ndarray]:
        """Ground truth of one sample: boxes (xyxy pixels) and 0-based class ids."""
        return {"boxes": sample.boxes, "class_ids": sample.labels}

    def save_preview(self, out_png: Path, split: str = "train") -> Path:
        """A few training images with their boxes, for people and the prepare stage."""
        from defects.data.synthetic.preview import save_preview

        return save_preview(self.root, out_png, split=split, channels=self.channels)

    def train_dataloader(self) -> DataLoader:
        return self.resumable(self._loader("train", shuffle=True))

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
