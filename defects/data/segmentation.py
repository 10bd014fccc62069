"""Segmentation data (steel, magnetic tile, later pipe): images + per-class masks.

Two on-disk layouts, chosen by `layout`:
- `severstal`: `{split}/images/*` and `{split}/train.csv` (ImageId, ClassId, EncodedPixels);
  an image with no row, or only empty rows, is defect-free.
- `masks`: `{split}/images/*` and `{split}/masks/<stem>.png`, one index mask per image
  (0 = background, k = class k); an image with no mask file is defect-free.

Defect-free images stay in every split: the gate learns from them. Masks are [K, H, W]
channels (one per class), so the loss, the metric and the RLE writer see the same thing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from defects.data.cache import DecodedCache
from defects.data.images import list_images, open_image, read_image
from defects.data.loaders import ResumableLoader, loader_workers
from defects.data.transforms import build_transform, to_tensor
from defects.formats.errors import FormatError, SkipReport, handle
from defects.formats.mask_folder import read_index_mask
from defects.formats.severstal import read_severstal_csv, rle_decode

log = logging.getLogger("defects")

LAYOUTS = ("severstal", "masks")


@dataclass(frozen=True)
class SegmentationSample:
    """One image and where its masks come from: RLE per class id, or an index-mask file."""

    image: Path
    rles: dict[int, str]
    mask_file: Path | None

    @property
    def classes(self) -> set[int]:
        """1-based class ids known to be present (from the CSV; index masks are read lazily)."""
        return set(self.rles)


def scan_segmentation_split(
    root: str | Path,
    split: str,
    num_classes: int,
    layout: str = "severstal",
    shape: Sequence[int] = (256, 1600),
    strict: bool = True,
    report: SkipReport | None = None,
) -> list[SegmentationSample]:
    """List one split's samples, validating the CSV (rows named) or the mask files."""
    if layout not in LAYOUTS:
        raise ValueError(f"data.layout: '{layout}' is not one of {', '.join(LAYOUTS)}")
    split_dir = Path(root) / split
    images_dir = split_dir / "images"
    if not images_dir.is_dir():
        raise FormatError(images_dir, f"split '{split}' has no images folder")
    images = list_images(images_dir)
    if not images:
        raise FormatError(images_dir, f"split '{split}' is empty: no images found")
    if layout == "severstal":
        csv_path = split_dir / "train.csv"
        table = read_severstal_csv(csv_path, num_classes, tuple(shape), strict, report)
        names = {p.name for p in images}
        for image_id in sorted(set(table) - names):
            handle(
                FormatError(csv_path, f"ImageId '{image_id}' has no image in {images_dir}"),
                strict,
                report,
            )
        return [SegmentationSample(p, table.get(p.name, {}), None) for p in images]
    masks_dir = split_dir / "masks"
    stems = {p.stem for p in images}
    if masks_dir.is_dir():
        for orphan in sorted(masks_dir.glob("*.png")):
            if orphan.stem not in stems:
                handle(FormatError(orphan, "mask has no matching image"), strict, report)
    samples = []
    for image in images:
        mask_file = masks_dir / f"{image.stem}.png"
        samples.append(SegmentationSample(image, {}, mask_file if mask_file.is_file() else None))
    return samples


def load_masks(sample: SegmentationSample, shape: tuple[int, int], num_classes: int) -> np.ndarray:
    """[H, W, K] uint8 masks for `sample` (zeros for a defect-free image)."""
    masks = np.zeros((*shape, num_classes), dtype=np.uint8)
    for class_id, rle in sample.rles.items():
        masks[:, :, class_id - 1] = rle_decode(rle, shape)
    if sample.mask_file is not None:
        index = read_index_mask(sample.mask_file, num_classes, shape)
        for class_id in range(1, num_classes + 1):
            masks[:, :, class_id - 1] = index == class_id
    return masks


class SegmentationDataset(Dataset):
    """Image [C, H, W] float in [0, 1] and masks [K, H, W] float, after `transform`."""

    def __init__(
        self,
        samples: Sequence[SegmentationSample],
        num_classes: int,
        transform: A.Compose,
        channels: int = 1,
        cache: DecodedCache | None = None,
    ):
        self.samples = list(samples)
        self.num_classes = num_classes
        self.transform = transform
        self.channels = channels
        self.cache = cache or DecodedCache(0)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.samples[index]
        image = self.cache.get(sample.image, lambda: read_image(sample.image, self.channels))
        masks = self.cache.get(
            (sample.image, "masks"),
            lambda: load_masks(sample, image.shape[:2], self.num_classes),
        )
        out = self.transform(image=image, mask=masks)
        image, masks = out["image"], out["mask"]
        # Copies: the cached arrays come back untouched when the transform does nothing.
        target = torch.tensor(masks.transpose(2, 0, 1), dtype=torch.float32)
        return to_tensor(image), target


def collate_same_size(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
    """Stack a batch; images of different sizes need `data.resize` (or batch_size 1)."""
    shapes = {tuple(image.shape) for image, _ in batch}
    if len(shapes) > 1:
        raise ValueError(
            f"images of different sizes in one batch {sorted(shapes)}: set data.resize=[H,W] "
            "for this dataset"
        )
    images, masks = zip(*batch, strict=True)
    return torch.stack(images), torch.stack(masks)


def balanced_weights(labels: Sequence[set[int]], clean_share: float | None = None) -> list[float]:
    """Per-image sampling weight: the inverse frequency of its rarest class (0 = defect-free).

    With `clean_share`, the defect-free images together get that share of the draws and the
    defective ones the rest, still balanced by class: a gate and a segmenter that see clean
    tiles as one group in six (five classes) learn to fire on clean texture."""
    counts: dict[int, int] = {}
    for found in labels:
        for key in found or {0}:
            counts[key] = counts.get(key, 0) + 1
    weights = [max(1.0 / counts[key] for key in (found or {0})) for found in labels]
    if clean_share is None:
        return weights
    if not 0.0 <= clean_share < 1.0:
        raise ValueError(f"data.clean_share: must be in [0, 1), got {clean_share}")
    clean = sum(w for w, found in zip(weights, labels, strict=True) if not found)
    defective = sum(weights) - clean
    if not clean or not defective:
        return weights
    scale = {True: clean_share / clean, False: (1 - clean_share) / defective}
    return [w * scale[not found] for w, found in zip(weights, labels, strict=True)]


class SegmentationDataModule(ResumableLoader, L.LightningDataModule):
    """Train on random (defect-biased) crops, validate and test on whole images."""

    def __init__(
        self,
        root: str,
        class_names: list[str],
        layout: str = "severstal",
        shape: list[int] | None = None,
        channels: int = 1,
        batch_size: int = 8,
        eval_batch_size: int = 4,
        num_workers: int | str = "auto",
        crop: list[int] | None = None,
        crop_defect_bias: float = 0.6,
        resize: list[int] | None = None,
        augment: list[Any] | None = None,
        balanced_sampling: bool = False,
        clean_share: float | None = None,
        strict: bool = True,
        seed: int = 0,
        cache_mb: float = 1024,
    ):
        super().__init__()
        DecodedCache(cache_mb)  # a bad value fails here
        self.cache_mb = cache_mb
        self.caches: dict[str, DecodedCache] = {}  # one per split, kept across its loaders
        self.root = Path(root)
        self.class_names = list(class_names)
        self.layout = layout
        self.shape = tuple(shape or (256, 1600))
        self.channels = channels
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        loader_workers(num_workers)  # a bad value fails here, not at the first epoch
        self.num_workers = num_workers
        self.crop = crop
        self.crop_defect_bias = crop_defect_bias
        self.resize = resize
        self.augment = augment or []
        self.balanced_sampling = balanced_sampling
        self.clean_share = clean_share
        self.strict = strict
        self.seed = seed
        self.samples: dict[str, list[SegmentationSample]] = {}
        self.skipped = SkipReport()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split_samples(self, split: str) -> list[SegmentationSample]:
        if split not in self.samples:
            if not self.root.is_dir():
                raise FormatError(self.root, "dataset folder not found (run defects.prepare?)")
            self.samples[split] = scan_segmentation_split(
                self.root,
                split,
                self.num_classes,
                self.layout,
                self.shape,
                self.strict,
                self.skipped,
            )
            log.info("%s: %d images", split, len(self.samples[split]))
            if self.skipped.count:
                log.warning("skipped so far: %s", self.skipped.summary())
        return self.samples[split]

    def _geometry(self, train: bool) -> list[A.BasicTransform]:
        steps: list[A.BasicTransform] = []
        if self.resize:
            steps.append(A.Resize(*self.resize, interpolation=1, mask_interpolation=0))
        if train and self.crop:
            height, width = self.crop
            # Images smaller than the crop (tiles of mixed sizes) are mirrored out to it.
            steps.append(A.PadIfNeeded(height, width, border_mode=cv2.BORDER_REFLECT_101))
            steps.append(
                A.OneOf(
                    [
                        A.CropNonEmptyMaskIfExists(height, width, p=self.crop_defect_bias),
                        A.RandomCrop(height, width, p=1 - self.crop_defect_bias),
                    ],
                    p=1.0,
                )
            )
        return steps

    def transform(self, train: bool) -> A.Compose:
        steps = self._geometry(train) + (list(self.augment) if train else [])
        return build_transform(steps, bbox=False, seed=self.seed if train else None)

    def _cache(self, split: str) -> DecodedCache:
        if split not in self.caches:
            self.caches[split] = DecodedCache(self.cache_mb)
        return self.caches[split]

    def dataset(self, split: str) -> SegmentationDataset:
        return SegmentationDataset(
            self.split_samples(split),
            self.num_classes,
            self.transform(split == "train"),
            self.channels,
            self._cache(split),
        )

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.split_samples("train")
            self.split_samples("valid")
        if stage in (None, "test"):
            self.split_samples("test")
        if stage == "validate":
            self.split_samples("valid")

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        dataset = self.dataset(split)
        sampler = None
        if shuffle and self.balanced_sampling:
            labels = [self.sample_classes(dataset, i) for i in range(len(dataset))]
            generator = torch.Generator().manual_seed(self.seed)
            sampler = WeightedRandomSampler(
                balanced_weights(labels, self.clean_share), len(dataset), generator=generator
            )
        workers = loader_workers(self.num_workers, self.trainer)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            collate_fn=collate_same_size,
            drop_last=shuffle and len(dataset) > batch_size,
        )

    def sample_classes(self, dataset: SegmentationDataset, index: int) -> set[int]:
        """Classes present in one image (index masks are read once, here)."""
        sample = dataset.samples[index]
        if sample.mask_file is None:
            return sample.classes
        index_mask = read_index_mask(sample.mask_file, self.num_classes)
        return {int(v) for v in np.unique(index_mask) if v}

    def eval_samples(self, split: str) -> list[SegmentationSample]:
        """The split's samples as stored (original images; masks at their resolution)."""
        return self.split_samples(split)

    def truth(self, sample: SegmentationSample) -> np.ndarray:
        """[K, H, W] bool masks of one sample at its image's own size."""
        with open_image(sample.image) as image:
            width, height = image.size
        return load_masks(sample, (height, width), self.num_classes).transpose(2, 0, 1).astype(bool)

    def save_preview(self, out_png: Path, split: str = "train") -> Path:
        """A few training images with their masks overlaid."""
        from defects.data.synthetic.steel import save_steel_preview

        return save_steel_preview(self.root, out_png, split=split, class_names=self.class_names)

    def train_dataloader(self) -> DataLoader:
        return self.resumable(self._loader("train", self.batch_size, shuffle=True))

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)
