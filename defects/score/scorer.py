"""The Ray actor that runs the product's predictor over decoded images.

Each actor loads the model once (`defects.predict.load`, ONNX Runtime on `threads` threads
by default) and turns a batch of decoded images into output rows: the result's own JSON
record (`Result.record`, what `defects predict` writes for a detector and what its
summary/submission hold for a segmenter), the findings per class, and optional overlays.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from defects.predict import load
from defects.score.model import ModelPackage
from defects.score.parts import SCHEMA
from defects.score.storage import Location, put_bytes

OVERLAYS = "overlays"


def overlay_key(source: Location, key: str) -> str:
    """An overlay's path below overlays/: the image's own path below the input, + .png."""
    return f"{source.relative(key)}.png"


class Scorer:
    """Ray Data callable class: a batch of {path, image, width, height, error} -> rows."""

    def __init__(
        self,
        package: Any,
        threads: int,
        source: Location,
        overlays: Location | None = None,
        device: str = "cpu",
    ) -> None:
        import ray

        if isinstance(package, ray.ObjectRef):  # one copy in the object store for all actors
            package = ray.get(package)
        assert isinstance(package, ModelPackage)
        self.package = package
        self.source = source
        self.overlays = overlays
        self._folder = tempfile.TemporaryDirectory(prefix="defects-score-model-")
        path = package.materialize(Path(self._folder.name))
        self.predictor = load(path, device=device, backend=package.backend, threads=threads)
        if package.backend == "eager":
            import torch

            torch.set_num_threads(threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        keys = [str(k) for k in batch["path"]]
        errors = [str(error) or None for error in batch["error"]]
        ok = [i for i, error in enumerate(errors) if error is None]
        images = [batch["image"][i] for i in ok]
        results = self.predictor.predict_batch(images) if ok else []
        n = len(keys)
        records: list[str | None] = [None] * n
        counts: list[str | None] = [None] * n
        defective: list[bool | None] = [None] * n
        for i, image, result in zip(ok, images, results, strict=True):
            found = result.counts()
            records[i] = json.dumps(result.record())
            counts[i] = json.dumps(found)
            defective[i] = bool(found)
            if self.overlays is not None:
                self.write_overlay(keys[i], image, result)
        sizes = {
            name: [int(v) if e is None else None for v, e in zip(batch[name], errors, strict=True)]
            for name in ("width", "height")
        }
        columns = {
            "path": keys,
            **sizes,
            "record": records,
            "counts": counts,
            "defective": defective,
            "model": [self.package.name] * n,
            "model_version": [self.package.version] * n,
            "error": errors,
        }
        return pa.table(columns, schema=SCHEMA)

    def write_overlay(self, key: str, image: np.ndarray, result: Any) -> None:
        from PIL import Image

        assert self.overlays is not None
        buffer = io.BytesIO()
        Image.fromarray(result.overlay(image)).save(buffer, format="PNG")
        path = self.overlays.join(overlay_key(self.source, key))
        put_bytes(self.overlays, path, buffer.getvalue())
