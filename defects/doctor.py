"""`defects doctor`: is this machine set up right? One line per check, with the fix when not.

Required checks (the exit status is 1 when one fails): the settings, Python, torch, ONNX
Runtime, the MLflow store, the data/model/output folders, free disk and memory. Optional ones
(reported, never fatal): a GPU (required when DEFECTS_DEVICE=cuda), the yolo and dvc extras,
the DVC remote, Chromium for the browser tests. Network checks give up after `timeout`
seconds. Nothing printed holds a secret: credentials are passed to clients, never shown.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from configparser import ConfigParser
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from defects.settings import (
    DEFAULT_TRACKING_URI,
    Settings,
    SettingsError,
    env_file,
    load_settings,
    redact,
)

PYTHON_RANGE = ((3, 11), (3, 13))  # pyproject's requires-python: >=3.11,<3.13
GIB = 1024**3
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
FOLDERS = {
    "data_dir": "DEFECTS_DATA_DIR",
    "model_dir": "DEFECTS_MODEL_DIR",
    "output_dir": "DEFECTS_OUTPUT_DIR",
}


@dataclass(frozen=True)
class Check:
    """One line of the report: `fix` says what to do when `ok` is false."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True

    def line(self) -> str:
        mark = "✔" if self.ok else "✖"
        text = f"{mark} {self.name:<13} {self.detail}"
        if not self.ok:
            text += f" ({'required' if self.required else 'optional'}); fix: {self.fix}"
        return text


# ------------------------------------------------------------------------- the software


def check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    low, high = PYTHON_RANGE
    ok = low <= sys.version_info[:2] < high
    return Check(
        "python",
        ok,
        f"{version} ({sys.executable})",
        "use Python 3.11 or 3.12 (pyproject: requires-python >=3.11,<3.13)",
    )


def check_torch(settings: Settings) -> Iterator[Check]:
    """torch itself, then CUDA and the GPUs it sees (required only when the device is cuda)."""
    try:
        import torch
    except ImportError as exc:
        yield Check("torch", False, f"not importable ({exc})", "pip install defects (torch>=2.4)")
        return
    yield Check("torch", True, f"{torch.__version__}")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    want_gpu = settings.device == "cuda"
    if count:
        names = ", ".join(sorted({torch.cuda.get_device_name(i) for i in range(count)}))
        detail = f"CUDA {torch.version.cuda}, {count} GPU{'s' if count > 1 else ''}: {names}"
    elif torch.version.cuda is None:
        detail = f"no GPU: torch {torch.__version__} is a CPU build"
    else:
        detail = f"no GPU visible to CUDA {torch.version.cuda}"
    fix = (
        "install the NVIDIA driver and a CUDA build of torch, or set DEFECTS_DEVICE=cpu"
        if want_gpu
        else "only for GPU training: the NVIDIA driver and a CUDA build of torch"
    )
    yield Check("cuda", count > 0, detail, fix, required=want_gpu)


def check_extra(name: str, module: str, extra: str, use: str) -> Check:
    """An optional extra by its distribution's version, without importing it (ultralytics
    alone takes seconds)."""
    if importlib.util.find_spec(module) is None:
        return Check(
            name,
            False,
            f"{module} not installed",
            f"pip install 'defects[{extra}]' ({use})",
            required=False,
        )
    try:
        version = importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        version = "installed"
    return Check(name, True, f"{module} {version}", required=False)


def check_onnxruntime() -> Check:
    try:
        import onnxruntime
    except ImportError as exc:
        return Check(
            "onnxruntime", False, f"not importable ({exc})", "pip install 'onnxruntime>=1.22'"
        )
    providers = onnxruntime.get_available_providers()
    ok = "CPUExecutionProvider" in providers
    return Check(
        "onnxruntime",
        ok,
        f"{onnxruntime.__version__}: {', '.join(providers)}",
        "reinstall onnxruntime (no CPU provider)",
    )


# ------------------------------------------------------------------------- folders, resources


def existing_ancestor(path: Path) -> Path:
    """The path itself or its nearest parent that exists (what a mkdir -p would write into)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def writable(folder: Path) -> str | None:
    """None when `folder` is (or can be made as) a writable folder; else what is wrong. Tries
    a real file: permission bits say nothing for root or a read-only mount."""
    target = existing_ancestor(folder)
    if not target.is_dir():
        return f"{target} is not a folder"
    try:
        with tempfile.TemporaryFile(dir=target):
            pass
    except OSError as exc:
        return f"cannot write in {target} ({exc.strerror or exc})"
    return None


def check_folders(settings: Settings) -> Iterator[Check]:
    for name, variable in FOLDERS.items():
        folder = settings.folder(name)
        problem = writable(folder)
        detail = f"{folder} " + ("writable" if folder.exists() else "(created when first used)")
        label = name.replace("_dir", " folder")
        yield Check(
            label,
            problem is None,
            problem or detail,
            f"make {folder} writable, or set {variable} to a folder you can write",
        )


def check_disk(settings: Settings, min_gb: float) -> Iterator[Check]:
    """Free space on each file system the folders live on."""
    seen: set[int] = set()
    for name in FOLDERS:
        place = existing_ancestor(settings.folder(name))
        try:
            device = place.stat().st_dev
        except OSError:
            continue
        if device in seen:
            continue
        seen.add(device)
        free = shutil.disk_usage(place).free / GIB
        yield Check(
            "disk",
            free >= min_gb,
            f"{free:.1f} GiB free at {place} (want {min_gb:g})",
            "free space there, or move the folders (DEFECTS_DATA_DIR, ...)",
        )


def available_memory() -> float:
    """Memory available to new processes, in GiB (MemAvailable on Linux)."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / GIB
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / GIB


def check_memory(min_gb: float) -> Check:
    free = available_memory()
    return Check(
        "memory",
        free >= min_gb,
        f"{free:.1f} GiB available (want {min_gb:g})",
        "close other programs, or train smaller batches (data.batch_size)",
    )


def check_chromium() -> Check:
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    return Check(
        "chromium",
        found is not None,
        found or "no chromium on PATH",
        "apt-get install chromium (only the browser tests need it)",
        required=False,
    )


# ------------------------------------------------------------------------- services


def check_mlflow(settings: Settings, timeout: float) -> Check:
    """The tracking store answers (a server's /health) or can be written (sqlite, file)."""
    uri = settings.tracking_uri or DEFAULT_TRACKING_URI
    shown = redact(uri)
    fix_uri = "or point MLFLOW_TRACKING_URI (DEFECTS_TRACKING_URI) at a running store"
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https"):
        url = uri.rstrip("/") + "/health"

        def health() -> int:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return int(response.status)

        try:
            status = within(timeout + 1, health)
            ok, detail = status == 200, f"{shown} answers ({status})"
        except (urllib.error.URLError, OSError) as exc:
            ok, detail = False, f"{shown} unreachable ({_reason(exc)})"
        return Check(
            "mlflow store",
            ok,
            detail,
            f"start the server (mlflow server --host "
            f"{parts.hostname} --port {parts.port or 80}) {fix_uri}",
        )
    if parts.scheme in ("sqlite", "file", ""):
        if parts.scheme == "sqlite":
            path = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
            folder = path.parent if path is not None else None
        else:
            folder = Path(parts.path if parts.scheme == "file" else uri)
            path = None
        if folder is None:  # sqlite:// or sqlite:///:memory:
            return Check("mlflow store", True, f"{shown} (in memory)")
        problem = writable(folder)
        if problem is None and path is not None and path.is_file():
            with path.open("rb") as db:
                if db.read(16) != b"SQLite format 3\x00":
                    problem = f"{path} is not a sqlite database"
        return Check(
            "mlflow store",
            problem is None,
            problem or f"{shown} writable",
            f"fix the folder, {fix_uri}",
        )
    if parts.hostname:  # a database server (postgresql://, mysql://): is the port open?
        port = parts.port or {"postgresql": 5432, "mysql": 3306, "mssql": 1433}.get(
            parts.scheme.split("+")[0], 0
        )
        try:
            address = (parts.hostname, port)
            within(timeout + 1, lambda: socket.create_connection(address, timeout=timeout).close())
            return Check("mlflow store", True, f"{shown} port {port} open")
        except OSError as exc:
            return Check(
                "mlflow store",
                False,
                f"{shown} unreachable ({_reason(exc)})",
                f"start the database {fix_uri}",
            )
    return Check("mlflow store", True, f"{shown} (not probed: {parts.scheme} store)")


class NoAnswer(TimeoutError):
    """A network call still running when its time was up."""


def within(seconds: float, call: Callable[[], Any]) -> Any:
    """`call()`, given up after `seconds` even where the library's own time-out does not
    cover a step (a name lookup): it runs in a daemon thread left behind if it hangs."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = call()
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise NoAnswer(f"no answer within {seconds:g} s")
    if "error" in result:
        raise result["error"]
    return result.get("value")


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "timed out"
    return str(getattr(reason, "strerror", None) or reason)


def find_dvc_root(start: Path) -> Path | None:
    for folder in [start.absolute(), *start.absolute().parents]:
        if (folder / ".dvc").is_dir():
            return folder
    return None


def read_dvc_config(root: Path) -> dict[str, dict[str, str]]:
    """`.dvc/config` with `.dvc/config.local` over it, as DVC merges them; sections named as
    DVC writes them without the quotes (`remote storage`)."""
    merged: dict[str, dict[str, str]] = {}
    for name in ("config", "config.local"):
        path = root / ".dvc" / name
        if not path.is_file():
            continue
        parser = ConfigParser(interpolation=None)
        try:
            parser.read(path)
        except Exception as exc:  # configparser's many errors: the file is not readable
            raise SettingsError(
                f"{path}: not a readable DVC config ({type(exc).__name__})"
            ) from None
        for section in parser.sections():
            key = " ".join(section.replace('"', " ").replace("'", " ").split())
            merged.setdefault(key, {}).update(parser[section])
    return merged


def check_dvc_remote(settings: Settings, root: Path, timeout: float) -> Check:
    """The default DVC remote is configured and answers (s3: the bucket; local: the folder)."""
    name = "dvc remote"
    repo = find_dvc_root(root)
    if repo is None:
        return Check(
            name,
            False,
            f"no DVC repository at or above {root.absolute()}",
            "run from the project checkout (or dvc init)",
            required=False,
        )
    try:
        config = read_dvc_config(repo)
    except SettingsError as exc:
        return Check(name, False, str(exc), "repair the file (dvc remote list)", required=False)
    remote = config.get("core", {}).get("remote")
    section = config.get(f"remote {remote}") if remote else None
    if not remote or not section or "url" not in section:
        return Check(
            name,
            False,
            f"no default remote in {repo / '.dvc' / 'config'}",
            "dvc remote add -d storage s3://BUCKET/PATH",
            required=False,
        )
    url = section["url"]
    parts = urlsplit(url)
    if parts.scheme == "s3":
        return _check_s3(name, remote, url, section, settings, timeout)
    if parts.scheme in ("", "file"):
        folder = Path(parts.path if parts.scheme else url)
        folder = folder if folder.is_absolute() else repo / ".dvc" / folder
        problem = writable(folder)
        return Check(
            name,
            problem is None,
            problem or f"{remote}: {folder} writable",
            "make the remote folder writable",
            required=False,
        )
    return Check(
        name, True, f"{remote}: {redact(url)} (not probed: {parts.scheme})", required=False
    )


def s3_problem(exc: BaseException, bucket: str, remote: str) -> tuple[str, str]:
    """(what went wrong, what to check) for an S3 call that failed: the endpoint does not
    answer, the credentials are missing or refused, or the bucket is not there. Says only
    the error's code or type, never its text (which may quote a request)."""
    from botocore.exceptions import ClientError, NoCredentialsError

    endpoint_fix = (
        "start the S3 service, or correct DEFECTS_S3_ENDPOINT_URL "
        f"(or dvc remote modify --local {remote} endpointurl URL)"
    )
    if isinstance(exc, NoAnswer):
        return str(exc), endpoint_fix
    if isinstance(exc, NoCredentialsError):
        return (
            "no credentials",
            "set DEFECTS_S3_ACCESS_KEY_ID and DEFECTS_S3_SECRET_ACCESS_KEY (environment or .env)",
        )
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", "?"))
        if code in ("404", "NoSuchBucket"):
            fix = f"create bucket {bucket}, or correct the remote's url (dvc remote modify)"
            return f"no bucket {bucket}", fix
        return (
            f"refused ({code})",
            "check the S3 credentials (DEFECTS_S3_ACCESS_KEY_ID / DEFECTS_S3_SECRET_ACCESS_KEY)",
        )
    return f"unreachable ({type(exc).__name__})", endpoint_fix


def _check_s3(
    name: str, remote: str, url: str, section: dict[str, str], settings: Settings, timeout: float
) -> Check:
    """HEAD the bucket with the remote's own endpoint and keys (config.local), else the
    settings', else boto3's usual chain."""
    bucket = urlsplit(url).netloc
    endpoint = section.get("endpointurl") or settings.s3_endpoint_url
    where = f"{remote}: {url}" + (f" at {redact(endpoint)}" if endpoint else "")
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return Check(
            name,
            False,
            f"{where}: boto3 not installed",
            "pip install 'defects[dvc]'",
            required=False,
        )
    secret = section.get("secret_access_key") or (
        settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
    )
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=section.get("region") or "us-east-1",
        aws_access_key_id=section.get("access_key_id") or settings.s3_access_key_id,
        aws_secret_access_key=secret,
        config=Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1}),
    )
    try:
        within(2 * timeout + 1, lambda: client.head_bucket(Bucket=bucket))
    except (NoAnswer, BotoCoreError, ClientError) as exc:
        detail, fix = s3_problem(exc, bucket, remote)
        return Check(name, False, f"{where}: {detail}", fix, required=False)
    return Check(name, True, f"{where}: bucket {bucket} reachable", required=False)


# ------------------------------------------------------------------------- the report


def run_checks(
    root: str | Path = ".",
    timeout: float = 3.0,
    min_disk_gb: float = 5.0,
    min_memory_gb: float = 2.0,
) -> list[Check]:
    """Every check, in report order. A check that breaks reports itself as failed."""
    checks: list[Check] = []
    try:
        settings = load_settings()
        path = env_file()
        checks.append(
            Check(
                "settings",
                True,
                f"{path.absolute()}" if path else "no .env (environment and defaults)",
            )
        )
    except SettingsError as exc:
        settings = Settings.model_construct()  # nothing set: the defaults
        checks.append(Check("settings", False, str(exc), "correct it (see .env.example)"))
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("python", check_python),
        ("torch", lambda: check_torch(settings)),
        ("yolo extra", lambda: check_extra("yolo extra", "ultralytics", "yolo", "YOLO models")),
        ("dvc extra", lambda: check_extra("dvc extra", "dvc", "dvc", "dvc repro, push, pull")),
        ("onnxruntime", check_onnxruntime),
        ("mlflow store", lambda: check_mlflow(settings, timeout)),
        ("dvc remote", lambda: check_dvc_remote(settings, Path(root), timeout)),
        ("folders", lambda: check_folders(settings)),
        ("disk", lambda: check_disk(settings, min_disk_gb)),
        ("memory", lambda: check_memory(min_memory_gb)),
        ("chromium", check_chromium),
    ]
    for label, step in steps:
        try:
            found = step()
            checks.extend([found] if isinstance(found, Check) else list(found))
        except Exception as exc:  # a doctor reports a broken check, it does not crash on it
            checks.append(
                Check(
                    label,
                    False,
                    f"the check itself failed ({type(exc).__name__})",
                    "report this; the check's error: " + str(exc)[:200],
                )
            )
    return checks


def report(checks: list[Check], as_json: bool = False) -> str:
    if as_json:
        return json.dumps([asdict(check) for check in checks], indent=2)
    failed = [c for c in checks if not c.ok and c.required]
    missing = [c for c in checks if not c.ok and not c.required]
    summary = (
        f"{len(failed)} required check{'s' if len(failed) != 1 else ''} failed"
        if failed
        else "all required checks passed"
    ) + (f"; {len(missing)} optional missing" if missing else "")
    return "\n".join([*(c.line() for c in checks), summary])


def doctor(
    as_json: bool = False,
    root: str | Path = ".",
    timeout: float = 3.0,
    min_disk_gb: float = 5.0,
    min_memory_gb: float = 2.0,
) -> int:
    """Print the report; return the exit status: 1 when a required check failed."""
    checks = run_checks(root, timeout, min_disk_gb, min_memory_gb)
    print(report(checks, as_json))
    return int(any(not c.ok and c.required for c in checks))
