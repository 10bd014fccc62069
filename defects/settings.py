"""Machine settings: where data, models and outputs live, the tracking store, S3, the device.

They differ per machine, not per experiment, so they come from the environment and a `.env`
file rather than from the Hydra config. Precedence, highest first:

1. a command-line (Hydra) override, e.g. `paths.data_root=/mnt/data` or
   `logger.tracking_uri=http://host:5000` (a value written into a config file, such as
   `configs/local/default.yaml` or an experiment, replaces the setting the same way);
2. the environment (`DEFECTS_DATA_DIR=/mnt/data`, or a standard name such as
   `MLFLOW_TRACKING_URI` / `AWS_ACCESS_KEY_ID`);
3. the `.env` file: `./.env` in the working directory, or the file `DEFECTS_ENV_FILE` names;
4. the config's default: the second argument of `${setting:NAME,DEFAULT}` in the YAML
   (or the entry point's own default outside Hydra).

The config reads a setting through the `setting` resolver, so an override of the key
replaces the interpolation and wins. Secrets (S3 secret key, MLflow password) are SecretStr:
the resolver refuses them, so they never enter a config that is logged as MLflow params or
saved, and no error message repeats a value. `export_environment` hands the endpoints and
credentials to boto3 and MLflow, which read only the process environment.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "DEFECTS_"
ENV_FILE_VARIABLE = "DEFECTS_ENV_FILE"
DEFAULT_ENV_FILE = ".env"
RESOLVER = "setting"
# The folder roots where nothing sets them: the defaults the configs give `${setting:...}`
# (paths/default.yaml, config.yaml's hydra.run.dir; a test holds them equal), for code
# outside Hydra (predictions, exports, defects doctor).
# MLflow's store where nothing sets one (MLflow refuses plain file stores now).
DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"
FOLDER_DEFAULTS = {"data_dir": "data", "model_dir": "models", "output_dir": "outputs"}
Device = Literal["auto", "cpu", "cuda", "mps"]


class SettingsError(ValueError):
    """A setting (environment variable or `.env` entry) that is unknown or has a bad value."""


def _names(*names: str) -> Any:
    return Field(None, validation_alias=AliasChoices(*names))


class Settings(BaseSettings):
    """What this machine says; None means "not set here" (the config's default applies).

    Each field lists the variable names it reads, the `DEFECTS_` one first: the first one
    set wins within a source (environment, then `.env`).
    """

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, env_file=None)

    # MLflow: the tracking store (sqlite:///mlruns.db when unset) and a server's login.
    tracking_uri: str | None = _names("DEFECTS_TRACKING_URI", "MLFLOW_TRACKING_URI")
    tracking_username: str | None = _names("DEFECTS_TRACKING_USERNAME", "MLFLOW_TRACKING_USERNAME")
    tracking_password: SecretStr | None = _names(
        "DEFECTS_TRACKING_PASSWORD", "MLFLOW_TRACKING_PASSWORD"
    )
    # Stop a run when its tracking store fails, instead of training on without it.
    tracking_strict: bool | None = _names("DEFECTS_TRACKING_STRICT")
    # Roots of the per-dataset folders (data/<dataset>, models/<dataset>) and of the outputs
    # (Hydra run folders, predictions, exports).
    data_dir: str | None = _names("DEFECTS_DATA_DIR")
    model_dir: str | None = _names("DEFECTS_MODEL_DIR")
    output_dir: str | None = _names("DEFECTS_OUTPUT_DIR")
    # S3 (the DVC remote, an MLflow artifact store): endpoint and credentials.
    s3_endpoint_url: str | None = _names(
        "DEFECTS_S3_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ENDPOINT_URL",
        "MLFLOW_S3_ENDPOINT_URL",
    )
    s3_access_key_id: str | None = _names("DEFECTS_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID")
    s3_secret_access_key: SecretStr | None = _names(
        "DEFECTS_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"
    )
    # Where models train and predict: cpu, cuda (gpu is taken as cuda), mps or auto.
    device: Device | None = _names("DEFECTS_DEVICE")

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """`NAME=` in a `.env` leaves the setting to the config, as if absent."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("device", mode="before")
    @classmethod
    def _gpu_is_cuda(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
            return "cuda" if value == "gpu" else value
        return value

    @field_validator("tracking_uri")
    @classmethod
    def _no_password_in_uri(cls, value: str | None) -> str | None:
        """The URI is logged (MLflow params, the config): a password in it would leak."""
        if value and urlsplit(value).password:
            raise ValueError(
                "holds a password; put the login in MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD instead"
            )
        return value

    def value(self, name: str, default: Any = None) -> Any:
        """A plain (non-secret) setting, or `default` where this machine leaves it unset."""
        if name not in type(self).model_fields:
            raise SettingsError(
                f"${{{RESOLVER}:{name}}}: no such setting; known: {', '.join(plain_names())}"
            )
        found = getattr(self, name)
        if isinstance(found, SecretStr):
            raise SettingsError(f"${{{RESOLVER}:{name}}}: a secret never goes into the config")
        return default if found is None else found

    def folder(self, name: str) -> Path:
        """A folder root (data_dir, model_dir, output_dir): this machine's, else the default."""
        return Path(self.value(name, FOLDER_DEFAULTS[name]))

    def output_path(self, *parts: str) -> Path:
        """A folder under the outputs root (DEFECTS_OUTPUT_DIR, else ./outputs)."""
        return self.folder("output_dir").joinpath(*parts)

    def inference_device(self, default: str = "cpu") -> str:
        """A torch device for predictors: `auto` picks cuda when there is one."""
        device = self.device or default
        if device == "auto":
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        return device

    def environment(self) -> dict[str, str]:
        """The standard variables boto3, DVC and MLflow read, from what is set here."""
        pairs = {
            "AWS_ACCESS_KEY_ID": self.s3_access_key_id,
            "AWS_SECRET_ACCESS_KEY": _reveal(self.s3_secret_access_key),
            "AWS_ENDPOINT_URL_S3": self.s3_endpoint_url,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint_url,
            "MLFLOW_TRACKING_USERNAME": self.tracking_username,
            "MLFLOW_TRACKING_PASSWORD": _reveal(self.tracking_password),
        }
        return {name: value for name, value in pairs.items() if value}


def _reveal(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()


def redact(uri: str) -> str:
    """A URI as it may be shown: without any user or password."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def plain_names() -> list[str]:
    """The settings a config may read (every field but the secrets)."""
    return [
        name
        for name, field in Settings.model_fields.items()
        if SecretStr not in getattr(field.annotation, "__args__", (field.annotation,))
    ]


def variable_names() -> list[str]:
    """Every variable name a setting reads, plus DEFECTS_ENV_FILE."""
    names = [ENV_FILE_VARIABLE]
    for name in Settings.model_fields:
        names.extend(_aliases(name))
    return names


def _aliases(name: str) -> list[str]:
    alias = Settings.model_fields[name].validation_alias
    return [str(c) for c in alias.choices] if isinstance(alias, AliasChoices) else [name]


def env_file() -> Path | None:
    """The `.env` to read: DEFECTS_ENV_FILE (which must exist), else ./.env when present."""
    named = os.environ.get(ENV_FILE_VARIABLE)
    if named:
        path = Path(named).expanduser()
        if not path.exists():
            raise SettingsError(f"{ENV_FILE_VARIABLE}: {path} does not exist")
        return path
    path = Path(DEFAULT_ENV_FILE)
    return path if path.is_file() else None


def _unknown_names(values: dict[str, Any], where: str) -> None:
    """A mistyped DEFECTS_ name would be ignored silently; name it instead."""
    known = {name.upper() for name in variable_names()}
    unknown = sorted(
        k for k in values if k.upper().startswith(ENV_PREFIX) and k.upper() not in known
    )
    if unknown:
        valid = ", ".join(n for n in variable_names() if n.startswith(ENV_PREFIX))
        raise SettingsError(f"{where}: unknown setting {', '.join(unknown)}; known: {valid}")


def load_settings() -> Settings:
    """The settings from the environment and the `.env` file; SettingsError names the bad
    variable (and the file) without repeating its value."""
    path = env_file()
    _unknown_names(dict(os.environ), "environment")
    if path is not None and path.is_file():
        from dotenv import dotenv_values

        _unknown_names(dotenv_values(path), str(path))
    try:
        return Settings(_env_file=path)  # type: ignore[call-arg]
    except ValidationError as exc:
        where = f"environment or {path}" if path is not None else "environment"
        problems = "; ".join(f"{_variable(error['loc'])}: {error['msg']}" for error in exc.errors())
        raise SettingsError(f"{where}: {problems}") from None


def _variable(loc: tuple[Any, ...]) -> str:
    """Every variable name of the field an error is about (pydantic names one of them)."""
    found = str(loc[0]) if loc else ""
    for name in Settings.model_fields:
        if found == name or found in _aliases(name):
            return " / ".join(_aliases(name))
    return ".".join(map(str, loc))


def setting(name: str, default: Any = None) -> Any:
    """`${setting:NAME,DEFAULT}` in a config: this machine's value, else DEFAULT."""
    return load_settings().value(name, default)


def register_resolver() -> None:
    """Make `${setting:...}` available to every config (idempotent)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, setting)


def export_environment(settings: Settings | None = None) -> list[str]:
    """Put the endpoints and credentials (from the environment or `.env`) under the names
    boto3 and MLflow read; returns the names set (print names, never the values)."""
    values = (settings or load_settings()).environment()
    os.environ.update(values)
    return sorted(values)


def start_app(main: Callable[[], Any]) -> None:
    """Run a Hydra app (`main()` of defects.train, ...) once the settings read cleanly: Hydra
    resolves its run folder from them before any entry point code runs, and would answer a
    bad `.env` with a traceback instead of this one line."""
    try:
        load_settings()
    except SettingsError as exc:
        raise SystemExit(f"defects: {exc}") from None
    main()
