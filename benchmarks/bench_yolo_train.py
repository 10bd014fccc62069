"""Our YOLO LightningModule vs Ultralytics' own trainer, same frames, same budget, same recipe.

    python benchmarks/bench_yolo_train.py --epochs 30            # synthetic winding default
    python benchmarks/bench_yolo_train.py --data data/winding --epochs 30 --imgsz 256

Both train the same network (`--model-yaml`, from scratch) on the same YOLO-layout folder
(`{train,valid,test}/{images,labels}`; without `--data` the winding default is generated into
the output folder) for `--epochs` with the same batch, nominal batch, optimizer (AdamW, the
same lr, momentum 0.9, weight decay 5e-4, linear decay to lrf 0.01), warm-up, mosaic with
close-mosaic, mixup 0.1, flips, scale/translate and HSV jitter. Each side keeps its best
checkpoint by its own validation (EMA weights).

Then both models are scored on the test split three ways, printed side by side:
1. our predictor + our metrics (`defects` evaluate: torchmetrics COCO mAP, P/R at the
   score threshold tuned on valid) -- the numbers `dvc repro` reports;
2. the same predictions of our predictor through Ultralytics' matching and `ap_per_class`
   (101-point interpolated AP, P/R at the max mean-F1 confidence);
3. Ultralytics' own validator on each model (its letterbox with rect batches, its NMS).
Rows 1-2 differ only by the metric; rows 2-3 only by pre/post-processing.

`--their-data` trains our side on Ultralytics' own augmented training dataset (its mosaic,
random_perspective, HSV; batches converted to ours, close-mosaic at the same epoch) with
everything else ours: when the two trainers differ, this tells the data pipeline's share
from the optimisation's.

One short CPU run is a noisy draw (weight init, augmentation, which frames the best epoch
fits), so `--seeds 1 2 3` trains both sides once per seed on the same frames and prints each
seed's rows and their mean. The generated default's test split can be enlarged
(`--n-test 8` videos; train and valid frames do not change: each split has its own RNG).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
for key, value in {"HF_HUB_OFFLINE": "1", "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false"}.items():
    os.environ.setdefault(key, value)

import torch  # noqa: E402
import yaml  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from defects.bundle import load_bundle, save_bundle  # noqa: E402
from defects.kinds.yolo import adapter  # noqa: E402
from defects.kinds.yolo.kind import KIND  # noqa: E402


def config(data: Path, out: Path, args: argparse.Namespace, seed: int) -> object:
    overrides = [
        "task=winding",
        f"paths.data_dir={data}",
        f"paths.model_dir={out / 'models'}",
        f"paths.metrics_dir={out / 'metrics'}",
        f"paths.plots_dir={out / 'plots'}",
        "logger=none",
        "trainer.enable_progress_bar=false",
        f"seed={seed}",
        f"model.model_yaml={args.model_yaml}",
    ]
    if args.n_test is not None:
        overrides.append(f"prepare.n_test={args.n_test}")
    overrides += args.override
    given = {
        "trainer.max_epochs": args.epochs,
        "data.batch_size": args.batch,
        "model.imgsz": args.imgsz,
        "model.nominal_batch": args.nominal_batch,
        "optimizer.lr": args.lr,
        "callbacks.close_mosaic.epochs": args.close_mosaic,
    }
    overrides += [f"{key}={value}" for key, value in given.items() if value is not None]
    with initialize_config_dir(config_dir=str(REPO / "defects" / "configs"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


class ReferenceBatches:
    """Ultralytics' training loader, its batches turned into ours (images in 0..1, xyxy pixel
    boxes, 1-based labels); mosaic and mixup close for the last `close` epochs as theirs do.
    Each `iter()` is one epoch (Lightning asks once per epoch)."""

    def __init__(self, dataset: object, hyp: object, batch: int, epochs: int, close: int):
        from torch.utils.data import DataLoader

        self.dataset, self.hyp = dataset, hyp
        self.loader = DataLoader(
            dataset, batch_size=batch, shuffle=True, num_workers=0, collate_fn=dataset.collate_fn
        )
        self.epoch, self.closed_at = 0, epochs - close

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        if self.epoch == self.closed_at:
            self.dataset.close_mosaic(self.hyp)
        self.epoch += 1
        for batch in self.loader:
            images = batch["img"].float() / 255
            size = torch.tensor(images.shape[-2:][::-1], dtype=torch.float32).repeat(2)
            xywh = batch["bboxes"] * size
            xyxy = torch.cat((xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2), 1)
            owner = [batch["batch_idx"] == i for i in range(len(images))]
            targets = [
                {"boxes": xyxy[mine], "labels": batch["cls"][mine].view(-1).long() + 1}
                for mine in owner
            ]
            yield list(images), targets


def reference_data_module(reference_yaml: str, reference_hyp: dict, **kwargs):
    """Our DataModule (valid/test as always) whose train split is Ultralytics' own dataset:
    our LightningModule trained on their data pipeline, which separates data from
    optimisation when the two trainers differ (`--their-data`)."""
    from defects.data.detection import DetectionDataModule

    class ReferenceTrainData(DetectionDataModule):
        def train_dataloader(self):
            hyp = dict(reference_hyp)
            epochs, close = hyp.pop("epochs"), hyp.pop("close_mosaic")
            dataset, ns = adapter.reference_train_dataset(reference_yaml, **hyp)
            return ReferenceBatches(dataset, ns, self.batch_size, epochs, close)

    return ReferenceTrainData(**kwargs)


def their_augmentation(cfg: object) -> dict:
    """Ultralytics' augmentation settings for our task's recipe: what its trainer gets
    (`train_theirs`) and what its dataset is built with (`--their-data`)."""
    return {
        "close_mosaic": cfg.callbacks.close_mosaic.epochs,
        "mosaic": 1.0,
        "mixup": cfg.data.mixup,
        "fliplr": 0.5,
        "scale": 0.5,
        "translate": 0.1,
        "hsv_h": 0.015,
        "hsv_s": 0.7,
        "hsv_v": 0.4,
    }


def reference_hyp(cfg: object) -> dict:
    """Their dataset's settings for `--their-data`: the augmentation plus size and schedule."""
    return {
        "imgsz": cfg.model.imgsz,
        "batch": cfg.data.batch_size,
        "epochs": cfg.trainer.max_epochs,
        **their_augmentation(cfg),
    }


def ultralytics_data_yaml(data: Path, class_names: list[str], out: Path) -> Path:
    """Their dataset file for our layout (labels sit beside images/ as labels/)."""
    spec = {
        "path": str(data.resolve()),
        "train": "train/images",
        "val": "valid/images",
        "test": "test/images",
        "names": dict(enumerate(class_names)),
    }
    path = out / "ultralytics_data.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def train_theirs(data_yaml: Path, out: Path, args: argparse.Namespace, cfg: object) -> Path:
    """Their trainer with our task's recipe values (their EMA keeps tau 2000: not an option)."""
    warmup, model = cfg.model.warmup, cfg.model
    return adapter.train_reference(
        str(data_yaml),
        args.model_yaml,
        project=str(out.resolve()),
        name="run",
        exist_ok=True,
        epochs=cfg.trainer.max_epochs,
        imgsz=model.imgsz,
        batch=cfg.data.batch_size,
        nbs=model.nominal_batch,
        optimizer="AdamW",
        lr0=cfg.optimizer.lr,
        lrf=model.lrf,
        momentum=0.9,
        weight_decay=model.weight_decay,
        warmup_epochs=warmup.warmup_epochs,
        warmup_momentum=warmup.warmup_momentum,
        warmup_bias_lr=warmup.warmup_bias_lr,
        **their_augmentation(cfg),
        device="cpu",
        workers=0,
        seed=int(cfg.seed),
        deterministic=False,
        amp=False,
        plots=False,
        verbose=False,
        val=True,
    )


def score(bundle_path: Path, datamodule: object, data_yaml: Path, args: argparse.Namespace):
    """Rows 1-3 of the module docstring for one bundle (thresholds tuned on valid)."""
    from defects.kinds.detection.evaluate import as_target

    bundle = load_bundle(bundle_path)
    bundle["thresholds"] = KIND.tune(bundle, datamodule)
    predictor = KIND.predictor(bundle)
    ours = KIND.evaluate(predictor, datamodule, "test").metrics
    samples = datamodule.eval_samples("test")
    preds, truths = [], []
    for sample in samples:
        target = as_target(predictor.detect_all([predictor.decode(sample.image)])[0])
        target["labels"] = target["labels"] - 1
        preds.append(target)
        truth = datamodule.truth(sample)
        truths.append(
            {
                "boxes": torch.as_tensor(truth["boxes"], dtype=torch.float32).reshape(-1, 4),
                "labels": torch.as_tensor(truth["class_ids"], dtype=torch.int64),
            }
        )
    metric_theirs = adapter.reference_box_metrics(preds, truths)
    net = KIND.network(bundle)
    model = adapter.reference_model(net.model, bundle["class_names"], args.model_yaml)
    validator = adapter.reference_validate(
        model,
        str(data_yaml),
        "test",
        imgsz=int(bundle["input"]["size"]),
        batch=8,
        device="cpu",
        conf=0.001,
        iou=0.7,
        workers=0,
    )
    return {
        "ours": {k: ours[f"test/{k}"] for k in ("precision", "recall", "mAP50", "mAP50-95")},
        "ultralytics_metric_on_our_predictions": metric_theirs,
        "ultralytics_validator": validator,
        "score_threshold": bundle["thresholds"]["score"],
    }


ROWS = ("ours", "ultralytics_metric_on_our_predictions", "ultralytics_validator")
SIDES = ("ours (defects Lightning)", "theirs (Ultralytics trainer)")
METRICS = ("precision", "recall", "mAP50", "mAP50-95")


def run_seed(data: Path, data_yaml: Path, out: Path, args: argparse.Namespace, seed: int):
    """Train both sides with one seed (unless --skip-train) and score both bundles."""
    cfg = config(data, out / "ours", args, seed)
    times = {}
    ours_bundle = out / "ours" / "models" / "bundle.pt"
    theirs_bundle = out / "theirs" / "bundle.pt"
    # A side whose bundle is already in the output folder is reused (delete it to retrain).
    if not args.skip_train and not ours_bundle.exists():
        from defects.train import train

        start = time.perf_counter()
        if args.their_data:
            from omegaconf import open_dict

            data_cfg = {k: v for k, v in cfg.data.items() if k != "_target_"}
            with open_dict(cfg):
                cfg.data = {
                    "_target_": f"{__name__}.reference_data_module",
                    "reference_yaml": str(data_yaml),
                    "reference_hyp": reference_hyp(cfg),
                    **data_cfg,
                }
        train(cfg)
        times[SIDES[0]] = time.perf_counter() - start
    if not args.skip_train and not theirs_bundle.exists():
        start = time.perf_counter()
        best = train_theirs(data_yaml, out / "theirs", args, cfg)
        times[SIDES[1]] = time.perf_counter() - start
        # Their EMA weights in our bundle: same network, same predictor, same thresholds rule.
        bundle = load_bundle(ours_bundle)
        state = {f"model.{k}": v for k, v in adapter.reference_state_dict(best).items()}
        keep = ("task", "model", "class_names", "thresholds", "input", "name")
        save_bundle(theirs_bundle, state_dict=state, **{k: bundle[k] for k in keep})
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    results = {
        SIDES[0]: score(ours_bundle, datamodule, data_yaml, args),
        SIDES[1]: score(theirs_bundle, datamodule, data_yaml, args),
    }
    (out / "results.json").write_text(json.dumps({"results": results, "seconds": times}, indent=2))
    return results, times


def print_rows(title: str, results: dict) -> None:
    print(title)
    print(f"{'scored by':42s}{'trained by':30s}{'P':>7s}{'R':>7s}{'mAP50':>8s}{'mAP50-95':>10s}")
    for row in ROWS:
        for side in SIDES:
            m = results[side][row]
            print(
                f"{row:42s}{side:30s}{m['precision']:7.3f}{m['recall']:7.3f}"
                f"{m['mAP50']:8.3f}{m['mAP50-95']:10.3f}"
            )


def mean_results(per_seed: list[dict]) -> dict:
    return {
        side: {
            row: {k: sum(r[side][row][k] for r in per_seed) / len(per_seed) for k in METRICS}
            for row in ROWS
        }
        for side in SIDES
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="YOLO-layout folder")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_yolo_train"))
    parser.add_argument("--epochs", type=int, default=None, help="default: the task config")
    parser.add_argument("--imgsz", type=int, default=None, help="default: the task config")
    parser.add_argument("--batch", type=int, default=None, help="default: the task config")
    parser.add_argument("--nominal-batch", type=int, default=None, help="default: the task config")
    parser.add_argument("--lr", type=float, default=None, help="default: the task config")
    parser.add_argument("--close-mosaic", type=int, default=None, help="default: the task config")
    parser.add_argument("--model-yaml", default="yolo12n.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42], help="training seeds")
    parser.add_argument("--data-seed", type=int, default=42, help="seed of the generated data")
    parser.add_argument("--n-test", type=int, default=None, help="test videos (generated data)")
    parser.add_argument(
        "--override", action="append", default=[], help="a Hydra override for our side"
    )
    parser.add_argument(
        "--their-data",
        action="store_true",
        help="our side trains on Ultralytics' own augmented training dataset (diagnostic)",
    )
    parser.add_argument("--skip-train", action="store_true", help="score existing runs")
    args = parser.parse_args()

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = args.data.resolve() if args.data else out / "data"
    cfg = config(data, out, args, args.data_seed)
    if args.data is None and not (data / "data.yaml").exists():
        instantiate(cfg.prepare, out_dir=str(data), _convert_="all")
    data_yaml = ultralytics_data_yaml(data, list(cfg.class_names), out)

    per_seed, all_times = [], {}
    for seed in args.seeds:
        folder = out / f"seed{seed}" if len(args.seeds) > 1 else out
        results, times = run_seed(data, data_yaml, folder, args, seed)
        per_seed.append(results)
        all_times[seed] = times
    print(
        f"\n{args.model_yaml} from scratch, {cfg.trainer.max_epochs} epochs, imgsz "
        f"{cfg.model.imgsz}, batch {cfg.data.batch_size}, nominal batch "
        f"{cfg.model.nominal_batch}, lr {cfg.optimizer.lr}; test split of {data}"
    )
    for seed, results in zip(args.seeds, per_seed, strict=True):
        print_rows(f"\nseed {seed}", results)
    summary = {"seeds": args.seeds, "per_seed": per_seed, "seconds": all_times}
    if len(per_seed) > 1:
        summary["mean"] = mean_results(per_seed)
        print_rows(f"\nmean of {len(per_seed)} seeds", summary["mean"])
        for side in SIDES:
            values = " ".join(f"{r[side]['ours']['mAP50']:.3f}" for r in per_seed)
            print(f"test mAP50 per seed, {side}: {values}")
    for seed, times in all_times.items():
        for side, seconds in times.items():
            print(f"training wall time, seed {seed}, {side}: {seconds:.0f} s")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
