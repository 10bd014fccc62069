"""The `defects` command (also `python -m defects`): `defects COMMAND --help`.

defects prepare task=weld
defects train task=weld trainer.max_epochs=2
defects evaluate task=weld
defects pipe all
python -m defects import_voc NEU/images NEU/annotations data/neu_det --seed 0
python -m defects import_masks magnetic_tile_src data/magnetic_tile --classes magnetic_tile
python -m defects preview data/weld plots/weld/data_samples.png
python -m defects predict --model models/weld/bundle.pt --input data/weld/test/images
python -m defects predict --model models/steel/bundle.pt --input data/steel/test/images
python -m defects export --model models/steel/bundle.pt --format onnx
python -m defects score --model models:/steel@production --input s3://line3/2024 --output scores
python -m defects predict --model models/steel/onnx --input data/steel/test/images
python -m defects serve --model models/steel/bundle.pt --port 8000 --backend onnx
python -m defects serve --model models/weld/bundle.pt --source line3.mp4 --confidence 0.6
python -m defects serve --model models/weld/bundle.pt --source 0 --threads 24 --host 0.0.0.0
python -m defects serve --model models:/weld@production --port 8000
python -m defects extract_frames line3.mp4 frames/line3 --every_seconds 0.5
python -m defects cut_chunks line3.mp4 chunks/line3 --seconds 60
python -m defects prelabel models/weld/bundle.pt frames/line3 prelabels/line3 --confidence 0.3
python -m defects yolo_to_cvat data/weld/train annotations.xml
python -m defects cvat_to_yolo annotations.xml data/new/labels --data_yaml data/new/data.yaml
python -m defects cvat_video_to_yolo annotations.xml labels/line3 --name_pattern "line3_{:06d}"
python -m defects import_cvat_yolo cvat_export_yolo data/line3
python -m defects sanitize data/raw_photos --dry_run
python -m defects doctor --json
python -m defects data pull
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import fire


def as_list(value: Any) -> list[Any]:
    """A list flag as fire hands it over: "a,b" arrives as a tuple, "a" as a str."""
    if isinstance(value, (tuple, list)):
        return list(value)
    return [v for v in str(value).split(",") if v.strip()]


def split_fractions(split: Any, flag: str = "--split") -> tuple[float, float, float]:
    """Three train,valid,test fractions from a flag; a ValueError naming the flag otherwise."""
    try:
        fractions = tuple(float(x) for x in as_list(split))
    except ValueError:
        raise ValueError(
            f"{flag}: expected three numbers 'train,valid,test', got '{split}'"
        ) from None
    if len(fractions) != 3:
        raise ValueError(f"{flag}: expected three fractions 'train,valid,test', got '{split}'")
    return fractions  # type: ignore[return-value]


def import_voc(
    images_dir: str,
    annotations_dir: str,
    out_dir: str,
    split: str = "0.7,0.2,0.1",
    seed: int = 0,
    strict: bool = True,
    class_names: str | None = None,
) -> dict:
    """Import a Pascal VOC dataset into the YOLO layout with a seeded train/valid/test split.

    Source files are only read; `out_dir` is written whole or not at all.
    """
    from defects.formats.voc import convert_voc_dataset

    fractions = split_fractions(split)
    names = [str(n).strip() for n in as_list(class_names)] if class_names else None
    return convert_voc_dataset(
        images_dir, annotations_dir, out_dir, names, fractions, int(seed), bool(strict)
    )


def import_masks(
    source: str,
    out_dir: str,
    classes: str,
    mask_suffix: str = ".png",
    seed: int = 0,
    strict: bool = True,
    split: str = "0.7,0.15,0.15",
    mask_threshold: int = 128,
    recursive: bool = False,
) -> dict:
    """Import per-class folders of images + binary masks into the index-mask layout.

    `classes` is "name=folder,...,none=folder" (folders relative to `source`, "none" = the
    defect-free folder) or a preset name: magnetic_tile. Source files are only read; `out_dir`
    is written whole or not at all. `--recursive` also reads subfolders (one per part or
    batch, e.g. KolektorSDD's kos01/Part0.jpg + kos01/Part0_label.bmp: `--classes defect=.
    --mask_suffix _label.bmp --recursive`); output names carry the subfolder (kos01_Part0).
    """
    from defects.formats.mask_folder import import_mask_folder, parse_classes

    fractions = split_fractions(split)
    return import_mask_folder(
        source,
        out_dir,
        parse_classes(classes),
        mask_suffix=str(mask_suffix),
        mask_threshold=int(mask_threshold),
        split_fractions=fractions,  # type: ignore[arg-type]
        seed=int(seed),
        strict=bool(strict),
        recursive=bool(recursive),
    )


def preview(root: str, out_png: str, n: int = 8, split: str = "train") -> str:
    """Draw a few images of a YOLO-layout dataset with their boxes into one PNG."""
    from defects.data.synthetic import save_preview

    return str(save_preview(root, out_png, n, split))


def predict(
    model: str,
    input: str,
    output: str | None = None,
    threshold: float | None = None,
    overlays: bool = True,
    backend: str = "eager",
) -> str:
    """Run a bundle (or an ONNX export folder, or a registered model such as
    models:/weld@production) on an image or a folder; return the report path.

    What is written is the model kind's: detection bundles write detections.json and
    overlays/<stem>.png; segmentation bundles write masks/<stem>.png (uint8 index mask: 0 =
    background, k = class k; where classes overlap the higher class id wins), overlays/,
    summary.json ({image: {gate, areas}}) and submission.csv (Severstal
    ImageId,ClassId,EncodedPixels), which is returned. `threshold` overrides the main
    threshold (detection: score; gated segmentation: gate). `backend`: eager or onnx.
    `output`: default <outputs root>/predictions (DEFECTS_OUTPUT_DIR, else ./outputs).
    """
    from defects.data.images import list_images
    from defects.predict import load, predict_images

    predictor = load(model, backend=backend)
    if threshold is not None:
        predictor.set_threshold(float(threshold))
    source = Path(input)
    if not source.exists():
        raise FileNotFoundError(f"--input: {source} does not exist")
    images = list_images(source) if source.is_dir() else [source]
    if not images:
        raise FileNotFoundError(f"--input: {source}: no images found")
    from defects.settings import load_settings

    folder = Path(output) if output else load_settings().output_path("predictions")
    return str(predict_images(predictor, images, folder, bool(overlays)))


def score(
    model: str,
    input: str,
    output: str,
    actors: int | None = None,
    threads_per_actor: int | None = None,
    batch_size: int = 4,
    part_size: int = 256,
    overlays: bool = False,
    address: str | None = None,
    backend: str = "onnx",
    gpus_per_actor: float = 0.0,
) -> str:
    """Score an archive on Ray Data: every image under `--input` (a folder or s3://bucket/
    prefix, recursively) through the model (bundle, export or models:/NAME@ALIAS), written
    to `--output` (folder or s3://) as Parquet: records/part-*.parquet, one row per image
    (path, width, height, record, counts, defective, model, model_version, error), and
    summary.json, which is returned; `--overlays` adds overlays/<image path>.png.

    Resumes: run it again with the same output and only what is not written yet is scored.
    Local Ray on this machine's cores unless `--address` (or RAY_ADDRESS) names a cluster.
    `--actors` x `--threads-per-actor` (ONNX Runtime threads) default to the CPUs less an
    eighth (at least one) kept for reading and decoding; `--batch-size`: images per forward pass;
    `--part-size`: images per part; `--gpus-per-actor` with `--backend eager`: on GPUs.
    """
    from defects.score.run import score as run
    from defects.score.summary import format_summary

    summary = run(
        model,
        input,
        output,
        actors=None if actors is None else int(actors),
        threads_per_actor=None if threads_per_actor is None else int(threads_per_actor),
        batch_size=int(batch_size),
        part_size=int(part_size),
        overlays=bool(overlays),
        address=address,
        backend=backend,
        gpus_per_actor=float(gpus_per_actor),
    )
    print(format_summary(summary))
    return str(summary["summary"])


def export(model: str, format: str = "onnx", output: str | None = None) -> str:
    """Export a bundle for ONNX Runtime: graph(s) + export.json (default outputs/onnx/<name>;
    the outputs root is DEFECTS_OUTPUT_DIR when set).

    `defects.load(folder)`, `predict --model folder` and `serve --model folder` use it.
    """
    from defects.export import export_bundle

    return str(export_bundle(model, output, format))


def serve(
    model: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_upload_mb: int = 32,
    backend: str = "eager",
    source: str | int | None = None,
    confidence: float | None = None,
    loop: bool = True,
    no_loop: bool = False,
    realtime: bool = True,
    threads: int = 16,
    dev: bool = False,
    max_pixels: int = 40_000_000,
) -> None:
    """Serve a bundle, export or registered model (models:/NAME@ALIAS, models:/NAME/VERSION)
    as an upload page (/), /predict, /api/predict, /health and /metrics.

    `--source` (a video file, a camera index such as 0, or an http:// / rtsp:// URL) adds
    live inspection: the page shows the video with the model's overlay (/video_feed, MJPEG)
    and its figures (/api/stats). A file plays at its frame rate and starts over at its end
    (`--no-loop`: the stream ends); a lost camera or URL is retried with back-off.
    `--confidence`: the model's main threshold (a detection's score, a segmenter's gate), for
    the stream and uploads alike.
    Runs on waitress with `--threads` workers (default 16): each video viewer holds one, 4
    stay for uploads and checks, so 16 threads admit 12 viewers; one more waits up to 3 s
    for a slot, then gets 503.
    `--dev`: Flask's development server instead (debugging only). Binds 127.0.0.1 unless
    `--host` says otherwise. Ctrl-C / SIGTERM close the stream and stop the server.
    `--max-pixels` (default 40 MP): an upload with more pixels is refused (413) from its
    header, before it is decoded; `--max-upload-mb` bounds its bytes.
    """
    from defects.server import viewer_limit
    from defects.stream import StreamConfig, parse_source

    if source is not None:
        parse_source(source)  # a missing file is an error before torch and the model load
    max_viewers = None if dev or source is None else viewer_limit(int(threads))
    if int(max_pixels) < 1:
        raise ValueError(f"--max-pixels must be at least 1, got {max_pixels}")
    from defects.predict import load
    from defects.serve import STREAM_EXTENSION, create_app
    from defects.server import run_server

    predictor = load(model, backend=backend)
    if confidence is not None:
        if not 0.0 <= float(confidence) <= 1.0:
            raise ValueError(f"--confidence must be within [0, 1], got {confidence}")
        predictor.set_threshold(float(confidence))
    stream = None
    if source is not None:
        stream = StreamConfig(
            source=source,
            loop=bool(loop) and not bool(no_loop),
            realtime=bool(realtime),
            confidence=None if confidence is None else float(confidence),
        )
    app = create_app(
        predictor,
        max_upload_mb=int(max_upload_mb),
        stream=stream,
        max_viewers=max_viewers,
        max_pixels=int(max_pixels),
    )
    live = app.extensions.get(STREAM_EXTENSION)
    run_server(
        app,
        host=host,
        port=int(port),
        threads=int(threads),
        dev=bool(dev),
        on_stop=live.close if live is not None else lambda: None,
    )


def extract_frames(
    video: str,
    out_dir: str,
    every_k: int | None = None,
    every_seconds: float | None = None,
    prefix: str | None = None,
    ext: str = "jpg",
) -> str:
    """Save every k-th frame (or one per period) as <prefix or stem>_<frame:06d>.<ext>."""
    from defects.video.chunks import extract_frames as run

    step = None if every_k is None else int(every_k)
    written = run(video, out_dir, step, every_seconds, prefix, ext)
    return f"{len(written)} frames written to {out_dir}"


def cut_chunks(video: str, out_dir: str, seconds: float = 60.0) -> str:
    """Cut a long video into `seconds`-long mp4 chunks for CVAT, with manifest.csv."""
    from defects.video.chunks import MANIFEST
    from defects.video.chunks import cut_chunks as run

    rows = run(video, out_dir, float(seconds))
    return f"{len(rows)} chunks written to {out_dir} (frame ranges in {MANIFEST})"


def yolo_to_cvat(
    source: str, out_xml: str, labels_dir: str | None = None, names: str | None = None
) -> str:
    """CVAT for images 1.1 XML of a YOLO split (split/images + split/labels) or images folder.

    `names`: a data.yaml, or "a,b,c"; default the data.yaml of the split or dataset.
    """
    from defects.formats.cvat import yolo_to_cvat as run

    class_names: Any = names
    if names is not None and not str(names).endswith((".yaml", ".yml")):
        class_names = [str(n).strip() for n in as_list(names)]
    return str(run(source, labels_dir, class_names, out_xml))


def cvat_to_yolo(
    xml: str, labels_dir: str, data_yaml: str | None = None, boxes_only: bool = False
) -> dict:
    """YOLO label files (one per image, empty = defect-free) from CVAT for images 1.1 XML.

    Polygons, ellipses, masks and other shapes become their bounding box (`--boxes_only`
    skips them instead); tags, attributes, z_order and groups are dropped and counted.
    """
    from defects.formats.cvat import cvat_to_yolo as run

    return run(xml, labels_dir, data_yaml, boxes_only=bool(boxes_only))


def cvat_video_to_yolo(
    xml: str,
    labels_dir: str,
    name_pattern: str = "frame_{:06d}",
    data_yaml: str | None = None,
    boxes_only: bool = False,
) -> dict:
    """Per-frame YOLO labels from CVAT for video 1.1 XML (tracks interpolated as CVAT does;
    other shapes than boxes as in cvat_to_yolo)."""
    from defects.formats.cvat import cvat_video_to_yolo as run

    return run(xml, labels_dir, name_pattern, data_yaml, boxes_only=bool(boxes_only))


def import_cvat_yolo(folder: str, out_dir: str) -> dict:
    """An unzipped CVAT "YOLO 1.1" export as out_dir/images, out_dir/labels, data.yaml."""
    from defects.formats.cvat import import_cvat_yolo_export

    return import_cvat_yolo_export(folder, out_dir)


def sanitize(folder: str, dry_run: bool = False) -> str:
    """Rename files to safe ASCII names (labels follow images); renames.csv keeps old names.

    `--dry_run` prints the plan and changes nothing.
    """
    from defects.formats.sanitize import apply_sanitize, plan_sanitize

    plan = plan_sanitize(folder)
    for old, new in plan:
        print(f"{old.as_posix()} -> {new.as_posix()}")
    if dry_run or not plan:
        return f"{len(plan)} renames planned" + (" (dry run: nothing changed)" if dry_run else "")
    return f"{len(plan)} files renamed; old names in {apply_sanitize(folder, plan)}"


def prelabel(
    model: str,
    frames_dir: str,
    out_dir: str,
    confidence: float = 0.25,
    backend: str = "eager",
) -> dict:
    """Boxes from a detection bundle as YOLO labels + annotations.xml for review in CVAT."""
    from defects.prelabel import prelabel as run

    return run(model, frames_dir, out_dir, float(confidence), backend)


def doctor(
    json: bool = False, timeout: float = 3.0, min_disk_gb: float = 5.0, min_memory_gb: float = 2.0
) -> None:
    """Is this machine set up right? One line per check (✔/✖, and the fix for a ✖): Python,
    torch, CUDA and the GPUs, the yolo and dvc extras, ONNX Runtime, the MLflow store, the DVC
    remote, the data/model/output folders, free disk and memory, Chromium.

    Exits 1 when a required check fails; `--json` prints the checks as a JSON list.
    `--timeout`: seconds each network check waits.
    """
    from defects.doctor import doctor as run

    status = run(bool(json), ".", float(timeout), float(min_disk_gb), float(min_memory_gb))
    if status:
        raise SystemExit(status)


def _data_verb(direction: str) -> Any:
    """`defects data pull|push`: DVC's transfer after a check of the default remote."""

    def run(*targets: str, jobs: int | None = None, timeout: float = 5.0) -> str:
        from defects.remote import RemoteError, transfer

        try:
            return transfer(
                direction,  # type: ignore[arg-type]
                [str(t) for t in targets],
                ".",
                None if jobs is None else int(jobs),
                float(timeout),
            )
        except RemoteError as exc:
            raise SystemExit(f"defects: {exc}") from None

    run.__name__ = direction
    run.__doc__ = (
        f"`dvc {direction} [TARGETS]` after asking the default DVC remote (its endpoint, keys "
        "and bucket), so a remote that is down, refuses the keys or lacks its bucket ends in "
        "one line naming it and what to check, before anything moves. "
        "`--jobs`: parallel transfers; `--timeout`: seconds the check waits."
    )
    return run


def _hydra_verb(verb: str) -> Any:
    """A verb that hands its words to a Hydra app; `main` routes the verb before fire parses
    anything (fire would take `-m` or `--help` as its own), this only lists it in `--help`."""
    module = f"defects.{verb}"

    def run(*overrides: str) -> None:
        from defects.apps import run_app

        run_app(verb, [str(o) for o in overrides])

    run.__name__ = verb
    run.__doc__ = f"The Hydra app `python -m {module}`: key=value overrides, -m, --help."
    return run


COMMANDS = {
    "prepare": _hydra_verb("prepare"),
    "train": _hydra_verb("train"),
    "evaluate": _hydra_verb("evaluate"),
    "pipe": _hydra_verb("pipe"),
    "import_voc": import_voc,
    "import_masks": import_masks,
    "preview": preview,
    "predict": predict,
    "export": export,
    "score": score,
    "serve": serve,
    "extract_frames": extract_frames,
    "cut_chunks": cut_chunks,
    "prelabel": prelabel,
    "yolo_to_cvat": yolo_to_cvat,
    "cvat_to_yolo": cvat_to_yolo,
    "cvat_video_to_yolo": cvat_video_to_yolo,
    "import_cvat_yolo": import_cvat_yolo,
    "sanitize": sanitize,
    "doctor": doctor,
    "data": {"pull": _data_verb("pull"), "push": _data_verb("push")},
}


HELP = ("-h", "--help")


def help_request(args: list[str]) -> list[str] | None:
    """`args` in fire's own spelling of a help request (`COMMAND -- --help`), or None where no
    help is asked for. fire takes `defects predict --help` too, but adds a note on stderr."""
    if "--" in args:
        return args if any(a in HELP for a in args[args.index("--") + 1 :]) else None
    if not any(a in HELP for a in args):
        return None
    return [a for a in args if a not in HELP] + ["--", "--help"]


def main(argv: list[str] | None = None) -> None:
    """fire's command line; a user error ends it with one line naming the argument or file.

    `defects train ...` (prepare, evaluate, pipe) runs the Hydra app with the words as typed.
    Help goes to stdout, as people pipe it (fire writes it to stderr), without loading torch.
    """
    import contextlib
    import sys

    from defects.apps import APPS, run_app

    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in APPS:
        run_app(args[0], args[1:])
        return
    asked = help_request(args)
    if asked is not None:
        with contextlib.redirect_stderr(sys.stdout):
            fire.Fire(COMMANDS, command=asked, name="defects")
        return
    from defects.config import ConfigError
    from defects.formats.errors import FormatError
    from defects.runtime import offline_environment

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    offline_environment()
    try:
        fire.Fire(COMMANDS, command=args, name="defects")
    except (ConfigError, FormatError, FileNotFoundError, FileExistsError, ValueError) as exc:
        raise SystemExit(f"defects: {exc}") from None


if __name__ == "__main__":
    main()
