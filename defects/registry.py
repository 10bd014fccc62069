"""MLflow's Model Registry: the bundle `defects.evaluate` scored becomes a model version, and
`models:/NAME@ALIAS` or `models:/NAME/VERSION` loads it back.

A factory promotes a model by moving an alias (staging, then production) in MLflow; every
machine that serves `models:/weld@production` then gets that version without copying files
by hand. A version's artifact is the bundle itself (`model/bundle.pt`, or an export folder's
files under `model/`), logged to the evaluate run whose test metrics its tags repeat. Loading
downloads it once into `<model root>/.registry/NAME/VERSION` (DEFECTS_MODEL_DIR, else
./models), whole or not at all, and hands it to the ordinary loader. Nothing here prints a
store's login: URIs are shown redacted.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import ssl
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from defects.settings import DEFAULT_TRACKING_URI, load_settings, redact

SCHEME = "models:/"
ARTIFACT_PATH = "model"  # the version's folder in its run's artifacts
BUNDLE_FILE = "bundle.pt"
EXPORT_MANIFEST = "export.json"  # defects.kinds.base.EXPORT_MANIFEST, without importing torch
CACHE_FOLDER = ".registry"
ORIGIN_FILE = "origin.json"
DEFAULT_TIMEOUT_S = 10.0
# MLflow retries a failed request 7 times with back-off (minutes): a model load that cannot
# reach its store should say so in seconds.
MAX_RETRIES = 1
URI_PATTERN = re.compile(r"models:/(?P<name>[^/@:]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))")
ALIAS_PATTERN = re.compile(r"[\w-]+")
RESERVED_ALIAS = re.compile(r"latest|[vV]\d+")  # MLflow's: `latest` and version names
NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


class RegistryError(FileNotFoundError):
    """The model a `models:/` URI names cannot be had: no such registered model, alias or
    version, or the store does not answer. A FileNotFoundError, as for a missing bundle."""


@dataclass(frozen=True)
class ModelRef:
    """A parsed `models:/NAME@ALIAS` or `models:/NAME/VERSION`."""

    uri: str
    name: str
    alias: str | None = None
    version: str | None = None


def is_registry_uri(value: Any) -> bool:
    """Whether `value` names a registered model (`models:/...`) rather than a path."""
    return isinstance(value, (str, os.PathLike)) and str(value).startswith(SCHEME)


def parse_model_uri(uri: str) -> ModelRef:
    """The name and the alias or version of a registry URI; ValueError naming it otherwise."""
    found = URI_PATTERN.fullmatch(uri)
    if found is None:
        raise ValueError(
            f"{uri}: not a registry model; expected models:/NAME@ALIAS or models:/NAME/VERSION"
        )
    return ModelRef(uri, found["name"], found["alias"], found["version"])


def name_problem(name: Any) -> str | None:
    """Why `name` cannot name a registered model loadable as models:/NAME@ALIAS, or None."""
    if not isinstance(name, str) or not name.strip():
        return "must be a non-empty string"
    bad = sorted({c for c in name if c in "/:@"})
    return f"'{name}' holds {' '.join(bad)}, which a models:/ URI cannot carry" if bad else None


def alias_problem(alias: Any) -> str | None:
    """Why MLflow would refuse `alias` (letters, digits, _ and -; not latest or v<N>), or None."""
    if not isinstance(alias, str) or not ALIAS_PATTERN.fullmatch(alias):
        return f"'{alias}' is not an alias: use letters, digits, _ and -"
    if RESERVED_ALIAS.fullmatch(alias):
        return f"'{alias}' is reserved by MLflow (latest and v<N> name versions)"
    return None


def version_tags(metrics: Mapping[str, float], **fields: Any) -> dict[str, str]:
    """Tags of a model version: each metric (6 decimals) and each field that is set."""
    tags = {key: str(value) for key, value in fields.items() if value not in (None, "")}
    for key, value in metrics.items():
        number = float(value)
        tags[key] = str(round(number, 6)) if math.isfinite(number) else str(number)
    return tags


def _stage(model: Path, folder: Path) -> Path:
    """`folder` holding what the version carries: a bundle as bundle.pt, or an export's files."""
    folder.mkdir(parents=True)
    if model.is_dir():
        shutil.copytree(model, folder, dirs_exist_ok=True)
    else:
        shutil.copy2(model, folder / BUNDLE_FILE)
    return folder


def register_model(
    client: Any,
    run_id: str,
    model: str | Path,
    name: str,
    alias: str | None = None,
    tags: Mapping[str, str] | None = None,
    description: str | None = None,
) -> Any:
    """Log `model` (a bundle or an export folder) under the run's `model/` artifacts and make
    it a new version of registered model `name` (created when new), with `tags`; `alias`, when
    given, moves to it. `client` is an MlflowClient of the run's store. Returns the version."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="defects-register-") as tmp:
        staged = _stage(Path(model), Path(tmp) / ARTIFACT_PATH)
        client.log_artifacts(run_id, str(staged), ARTIFACT_PATH)
    try:
        client.create_registered_model(name, description=description)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(
        name,
        f"runs:/{run_id}/{ARTIFACT_PATH}",
        run_id=run_id,
        tags=dict(tags or {}),
        description=description,
    )
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return version


def store_uri() -> str:
    """The tracking store (which holds the registry): the machine's setting, else sqlite."""
    return load_settings().tracking_uri or DEFAULT_TRACKING_URI


@contextmanager
def http_limits(timeout: float) -> Iterator[None]:
    """MLflow's HTTP time-out and retries bounded for the block; what the environment sets
    explicitly (MLFLOW_HTTP_REQUEST_TIMEOUT / _MAX_RETRIES) stays as set."""
    limits = {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(timeout))),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(MAX_RETRIES),
    }
    added = [name for name in limits if name not in os.environ]
    os.environ.update({name: limits[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _check_local_store(ref: ModelRef, store: str) -> None:
    """A sqlite store that does not exist holds no model (MLflow would create an empty one)."""
    if not store.startswith("sqlite:///") or store.endswith(":memory:"):
        return
    path = Path(store.removeprefix("sqlite:///"))
    if not path.is_file():
        raise RegistryError(
            f"{ref.uri}: no model store at {store} ({path} does not exist); point "
            "MLFLOW_TRACKING_URI (or DEFECTS_TRACKING_URI) at the store that holds the registry"
        )


def _probe(ref: ModelRef, store: str, timeout: float) -> None:
    """A tracking server that does not answer, named in one line: MLflow's own error is a
    page of urllib3 retries. Any HTTP answer (even 401) is an answer."""
    parts = urlsplit(store)
    if parts.scheme not in ("http", "https"):
        return
    url = redact(store).rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ssl.SSLError):  # it answered; MLflow has its own TLS settings
            return
        if isinstance(reason, TimeoutError):
            said = f"no answer within {timeout:g} s"
        else:
            said = str(getattr(reason, "strerror", None) or reason)
        raise RegistryError(
            f"{ref.uri}: the model store {redact(store)} does not answer ({said}); start it, "
            "or point MLFLOW_TRACKING_URI (or DEFECTS_TRACKING_URI) at one"
        ) from None


def _short(exc: Exception, store: str) -> str:
    """The first line of an MLflow error, without the store's login, at most 300 characters."""
    text = str(getattr(exc, "message", None) or exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    if store != redact(store):
        line = line.replace(store, redact(store))
    parts = urlsplit(store)
    if parts.password:
        line = line.replace(parts.password, "***")
    return line[:300]


def _known(client: Any, ref: ModelRef, store: str) -> str:
    """What the registered model does have, for the error: its aliases and versions."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(ref.name)
    except MlflowException as exc:
        if exc.error_code in NOT_FOUND:
            return f"no registered model '{ref.name}' in {redact(store)}"
        return _short(exc, store)
    aliases = ", ".join(f"@{a} = version {v}" for a, v in sorted(model.aliases.items()))
    try:
        found = client.search_model_versions(f"name = '{ref.name}'")
        versions = ", ".join(sorted((str(v.version) for v in found), key=int))
    except MlflowException:
        versions = "?"
    what = f"alias '{ref.alias}'" if ref.alias else f"version {ref.version}"
    return (
        f"registered model '{ref.name}' has no {what} (aliases: {aliases or 'none'}; "
        f"versions: {versions or 'none'})"
    )


def _find_version(client: Any, ref: ModelRef, store: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        if ref.alias:
            return client.get_model_version_by_alias(ref.name, ref.alias)
        return client.get_model_version(ref.name, ref.version)
    except MlflowException as exc:
        if exc.error_code in NOT_FOUND:
            raise RegistryError(f"{ref.uri}: {_known(client, ref, store)}") from None
        raise RegistryError(
            f"{ref.uri}: the model store {redact(store)} failed ({_short(exc, store)})"
        ) from None


def _origin(version: Any) -> dict[str, str]:
    return {
        "name": str(version.name),
        "version": str(version.version),
        "source": str(version.source),
        "run_id": str(version.run_id or ""),
    }


def _cached(folder: Path, origin: dict[str, str]) -> bool:
    """The folder holds this very version (same source), downloaded whole."""
    try:
        recorded = json.loads((folder / ORIGIN_FILE).read_text())
        return recorded == origin and (folder / ARTIFACT_PATH).is_dir()
    except (OSError, ValueError):
        return False


def _download(client: Any, version: Any, store: str, folder: Path) -> None:
    """The version's artifact into `folder`: into a temporary sibling first, renamed whole."""
    import mlflow.artifacts

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        uri = client.get_model_version_download_uri(version.name, version.version)
        got = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp), tracking_uri=store))
        if got != tmp / ARTIFACT_PATH:
            got.rename(tmp / ARTIFACT_PATH)
        origin = json.dumps(_origin(version), indent=1)
        (tmp / ORIGIN_FILE).write_text(origin)
        if folder.exists():  # a version of another store under the same name and number
            shutil.rmtree(folder)
        try:
            tmp.rename(folder)
        except OSError:  # another process renamed its own download first
            if not _cached(folder, _origin(version)):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch(
    uri: str,
    tracking_uri: str | None = None,
    cache_root: str | Path | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """The local bundle file (or export folder) of `models:/NAME@ALIAS` / `models:/NAME/VERSION`.

    The alias or version is looked up in `tracking_uri` (default: the machine's store), and
    the version is downloaded into `cache_root/NAME/VERSION` (default: the model root's
    `.registry`) unless it is there already. RegistryError names the URI when the model,
    alias or version does not exist or the store does not answer within `timeout` seconds.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    ref = parse_model_uri(str(uri))
    store = tracking_uri or store_uri()
    _check_local_store(ref, store)
    _probe(ref, store, timeout)
    root = Path(cache_root) if cache_root else load_settings().folder("model_dir") / CACHE_FOLDER
    with http_limits(timeout):
        client = MlflowClient(tracking_uri=store)
        version = _find_version(client, ref, store)
        folder = root / ref.name / str(version.version)
        if not _cached(folder, _origin(version)):
            try:
                _download(client, version, store, folder)
            except (MlflowException, OSError) as exc:
                raise RegistryError(
                    f"{ref.uri}: version {version.version} could not be downloaded from "
                    f"{redact(store)} ({_short(exc, store)})"
                ) from None
    model = folder / ARTIFACT_PATH
    if (model / BUNDLE_FILE).is_file():
        return model / BUNDLE_FILE
    if (model / EXPORT_MANIFEST).is_file():
        return model
    raise RegistryError(
        f"{ref.uri}: version {version.version} holds no defects bundle ({ARTIFACT_PATH}/"
        f"{BUNDLE_FILE}) or export ({ARTIFACT_PATH}/{EXPORT_MANIFEST})"
    )
