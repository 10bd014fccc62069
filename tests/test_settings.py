"""Machine settings (defects/settings.py): command line > environment > .env > config default,
the .env file's place, .env.example, and a planted secret that must show up nowhere."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from defects.settings import (
    DEFAULT_TRACKING_URI,
    ENV_FILE_VARIABLE,
    FOLDER_DEFAULTS,
    Settings,
    SettingsError,
    export_environment,
    load_settings,
    plain_names,
    start_app,
    variable_names,
)
from tests.conftest import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 240


def compose_with_hydra(overrides: list[str]) -> DictConfig:
    """The config with its `hydra` node (the run folder), as `python -m defects.train` sees it."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean machine: no settings in the environment, the working folder an empty tmp dir
    whose ./.env is the one read."""
    for name in variable_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# setting variable, config key, the override that replaces it, value -> expected config value
CASES: list[tuple[str, str, str, Callable[[str], object]]] = [
    ("DEFECTS_DATA_DIR", "paths.data_dir", "paths.data_root", lambda v: f"{v}/weld"),
    ("DEFECTS_MODEL_DIR", "paths.model_dir", "paths.model_root", lambda v: f"{v}/weld"),
    ("DEFECTS_MODEL_DIR", "callbacks.model_checkpoint.dirpath", "paths.model_root",
     lambda v: f"{v}/weld/checkpoints"),
    ("MLFLOW_TRACKING_URI", "logger.tracking_uri", "logger.tracking_uri", lambda v: v),
    ("DEFECTS_TRACKING_URI", "logger.tracking_uri", "logger.tracking_uri", lambda v: v),
    ("DEFECTS_DEVICE", "trainer.accelerator", "trainer.accelerator", lambda v: v),
]  # fmt: skip
DEFAULTS = {
    "paths.data_dir": "data/weld",
    "paths.model_dir": "models/weld",
    "callbacks.model_checkpoint.dirpath": "models/weld/checkpoints",
    "logger.tracking_uri": None,
    "trainer.accelerator": "cpu",
}
VALUES = {  # per variable: the .env value, the environment value, the command-line value
    "DEFECTS_DATA_DIR": ("/dotenv/data", "/env/data", "/cli/data"),
    "DEFECTS_MODEL_DIR": ("/dotenv/models", "/env/models", "/cli/models"),
    "MLFLOW_TRACKING_URI": ("sqlite:///dotenv.db", "http://127.0.0.1:5001", "sqlite:///cli.db"),
    "DEFECTS_TRACKING_URI": ("sqlite:///dotenv.db", "http://127.0.0.1:5001", "sqlite:///cli.db"),
    "DEFECTS_DEVICE": ("mps", "auto", "cuda"),
}


def selected(cfg: DictConfig, key: str) -> object:
    return OmegaConf.select(cfg, key, throw_on_resolution_failure=True)


@pytest.mark.parametrize(("variable", "key", "override", "expect"), CASES)
def test_precedence_each_step(
    machine: Path,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    key: str,
    override: str,
    expect: Callable[[str], object],
) -> None:
    dotenv, env, cli = VALUES[variable]
    base = ["task=weld"]
    assert selected(compose_with_hydra(base), key) == DEFAULTS[key]  # the config's default

    (machine / ".env").write_text(f"{variable}={dotenv}\n")
    assert selected(compose_with_hydra(base), key) == expect(dotenv)  # .env > default

    monkeypatch.setenv(variable, env)
    assert selected(compose_with_hydra(base), key) == expect(env)  # environment > .env

    cfg = compose_with_hydra([*base, f"{override}={cli}"])
    assert selected(cfg, key) == expect(cli)  # command line > environment


def test_output_dir_moves_the_hydra_run_folder(
    machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert compose_with_hydra(["task=weld"]).hydra.run.dir.startswith("outputs/hydra/weld/")
    (machine / ".env").write_text("DEFECTS_OUTPUT_DIR=/dotenv/out\n")
    assert compose_with_hydra(["task=weld"]).hydra.run.dir.startswith("/dotenv/out/hydra/weld/")
    monkeypatch.setenv("DEFECTS_OUTPUT_DIR", "/env/out")
    assert compose_with_hydra(["task=weld"]).hydra.run.dir.startswith("/env/out/hydra/weld/")
    cfg = compose_with_hydra(["task=weld", "hydra.run.dir=/cli/run"])
    assert cfg.hydra.run.dir == "/cli/run"
    assert str(load_settings().output_path("predictions")) == "/env/out/predictions"


def test_code_defaults_are_the_config_defaults(machine: Path) -> None:
    """Outside Hydra (predict, export, doctor) the folder roots default to what the configs'
    `${setting:NAME,DEFAULT}` say; the tracking store to tracking.py's default."""
    from defects.tracking import resolve_tracking_uri

    cfg = compose_with_hydra(["task=weld"])
    settings = load_settings()
    assert str(settings.folder("data_dir")) == cfg.paths.data_root == FOLDER_DEFAULTS["data_dir"]
    assert str(settings.folder("model_dir")) == cfg.paths.model_root
    assert cfg.hydra.run.dir.startswith(f"{settings.folder('output_dir')}/hydra/")
    assert cfg.logger.tracking_uri is None
    assert resolve_tracking_uri(cfg.logger.tracking_uri) == DEFAULT_TRACKING_URI


def test_defects_name_beats_the_standard_name_in_one_place(
    machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "standard")
    assert load_settings().s3_access_key_id == "standard"
    monkeypatch.setenv("DEFECTS_S3_ACCESS_KEY_ID", "ours")
    assert load_settings().s3_access_key_id == "ours"
    # ...but a standard name in the environment beats our name in .env (environment > .env).
    monkeypatch.delenv("DEFECTS_S3_ACCESS_KEY_ID")
    (machine / ".env").write_text("DEFECTS_S3_ACCESS_KEY_ID=from-dotenv\n")
    assert load_settings().s3_access_key_id == "standard"


def test_gpu_means_cuda_and_empty_means_unset(machine: Path) -> None:
    (machine / ".env").write_text("DEFECTS_DEVICE=GPU\nDEFECTS_DATA_DIR=\n")
    settings = load_settings()
    assert settings.device == "cuda" and settings.data_dir is None
    assert settings.value("data_dir", "data") == "data"


def test_env_file_variable_points_elsewhere(machine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (machine / ".env").write_text("DEFECTS_DATA_DIR=/cwd\n")
    elsewhere = machine / "site" / "defects.env"
    elsewhere.parent.mkdir()
    elsewhere.write_text("DEFECTS_DATA_DIR=/elsewhere\n")
    monkeypatch.setenv(ENV_FILE_VARIABLE, str(elsewhere))
    assert load_settings().data_dir == "/elsewhere"
    assert compose_with_hydra(["task=weld"]).paths.data_dir == "/elsewhere/weld"
    monkeypatch.setenv(ENV_FILE_VARIABLE, str(machine / "missing.env"))
    with pytest.raises(SettingsError, match=r"DEFECTS_ENV_FILE: .*missing\.env does not exist"):
        load_settings()
    monkeypatch.delenv(ENV_FILE_VARIABLE)
    assert load_settings().data_dir == "/cwd"  # the working folder's .env by default


def test_env_example_documents_and_parses_every_setting(
    machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (ROOT / ".env.example").read_text()
    assignments = re.findall(r"^# ([A-Z][A-Z0-9_]*)=(.*)$", text, flags=re.MULTILINE)
    documented = {name for name, _ in assignments}
    ours = {name for name in variable_names() if name.startswith("DEFECTS_")} - {ENV_FILE_VARIABLE}
    by_field = {}  # every setting has at least one of its names in the example
    for field, info in Settings.model_fields.items():
        choices = [str(c) for c in info.validation_alias.choices]  # type: ignore[union-attr]
        by_field[field] = documented & set(choices)
    assert all(by_field.values()), {f: n for f, n in by_field.items() if not n}
    assert documented <= set(variable_names()), documented - set(variable_names())
    assert len(ours - documented) <= 2  # the MLflow login is documented by its standard names
    # Uncommented, the example is a valid .env.
    (machine / ".env").write_text("\n".join(f"{n}={v}" for n, v in assignments) + "\n")
    settings = load_settings()
    assert settings.tracking_uri == "http://127.0.0.1:5000"
    assert settings.data_dir == "data" and settings.device == "cpu"
    assert settings.s3_secret_access_key is None  # empty = unset
    monkeypatch.setenv("DEFECTS_DATA_DIR", "/env")
    assert compose_with_hydra(["task=weld"]).paths.data_dir == "/env/weld"


def test_gitignore_keeps_env_out() -> None:
    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0

    assert ignored(".env") and ignored("site/.env"), ".env must be ignored by git"
    assert not ignored(".env.example")


def test_unknown_or_bad_settings_are_named_without_their_value(
    machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (machine / ".env").write_text("DEFECTS_DATA_DIRR=/typo\n")
    with pytest.raises(SettingsError, match=r"\.env: unknown setting DEFECTS_DATA_DIRR; known: "):
        load_settings()
    (machine / ".env").write_text("")
    monkeypatch.setenv("DEFECTS_DEVIC", "cpu")
    with pytest.raises(SettingsError, match="environment: unknown setting DEFECTS_DEVIC"):
        load_settings()
    monkeypatch.delenv("DEFECTS_DEVIC")
    secret = f"s{uuid.uuid4().hex}"
    monkeypatch.setenv("DEFECTS_DEVICE", secret)  # a secret pasted into the wrong variable
    with pytest.raises(SettingsError) as bad_device:
        load_settings()
    assert "DEFECTS_DEVICE: Input should be 'auto', 'cpu', 'cuda' or 'mps'" in str(bad_device.value)
    monkeypatch.delenv("DEFECTS_DEVICE")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://user:{secret}@127.0.0.1:5000")
    with pytest.raises(SettingsError, match="/ MLFLOW_TRACKING_URI: .*holds a password") as in_uri:
        load_settings()
    for error in (bad_device.value, in_uri.value):
        assert secret not in "".join(traceback.format_exception(error))
    # Through a config, the same error reaches the entry points as one resolvable line.
    with pytest.raises(Exception, match="holds a password") as resolved:
        compose_with_hydra(["task=weld"]).logger.tracking_uri  # noqa: B018
    assert secret not in "".join(traceback.format_exception(resolved.value))


def test_secrets_stay_secret(machine: Path) -> None:
    secret = f"s{uuid.uuid4().hex}"
    (machine / ".env").write_text(
        f"AWS_SECRET_ACCESS_KEY={secret}\nMLFLOW_TRACKING_PASSWORD={secret}\n"
        "DEFECTS_S3_ACCESS_KEY_ID=key-id\nDEFECTS_S3_ENDPOINT_URL=http://127.0.0.1:9000\n"
    )
    settings = load_settings()
    assert settings.s3_secret_access_key is not None
    assert settings.s3_secret_access_key.get_secret_value() == secret
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert secret not in text
    assert "s3_secret_access_key" not in plain_names()
    assert "tracking_password" not in plain_names()
    with pytest.raises(SettingsError, match="a secret never goes into the config"):
        settings.value("s3_secret_access_key")
    cfg = OmegaConf.create({"leak": "${setting:s3_secret_access_key}"})
    with pytest.raises(Exception, match="a secret never goes into the config"):
        OmegaConf.to_container(cfg, resolve=True)


def test_export_environment_hands_credentials_to_boto3_and_mlflow(
    machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exported = (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT_URL_S3",
        "MLFLOW_S3_ENDPOINT_URL",
    )
    for name in exported:
        monkeypatch.delenv(name, raising=False)
    (machine / ".env").write_text(
        "DEFECTS_S3_ACCESS_KEY_ID=key-id\nDEFECTS_S3_SECRET_ACCESS_KEY=the-secret\n"
        "DEFECTS_S3_ENDPOINT_URL=http://127.0.0.1:9000\n"
    )
    assert export_environment() == sorted(exported)
    assert os.environ["AWS_ACCESS_KEY_ID"] == "key-id"
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "the-secret"
    assert os.environ["AWS_ENDPOINT_URL_S3"] == os.environ["MLFLOW_S3_ENDPOINT_URL"]
    import boto3

    credentials = boto3.session.Session().get_credentials()
    assert credentials is not None and credentials.secret_key == "the-secret"


# --------------------------------------------------------------------- a planted secret


def test_planted_secret_appears_nowhere(weld_root: Path, tmp_path: Path) -> None:
    """A tiny training run reads its model folder, tracking store and S3 credentials from a
    .env holding secrets; then every file the run wrote (logs, Hydra's saved config, MLflow's
    store and artifacts, the bundle, reports) and its console output are searched for them."""
    from mlflow.tracking import MlflowClient

    work = tmp_path / "work"
    work.mkdir()
    secret, password = (f"planted{uuid.uuid4().hex}" for _ in range(2))
    store = f"sqlite:///{work / 'mlruns.db'}"
    env_file = work / ".env"
    env_file.write_text(
        f"MLFLOW_TRACKING_URI={store}\n"
        f"DEFECTS_MODEL_DIR={work / 'models'}\n"
        f"DEFECTS_OUTPUT_DIR={work / 'outputs'}\n"
        "DEFECTS_S3_ENDPOINT_URL=http://127.0.0.1:9\n"
        "DEFECTS_S3_ACCESS_KEY_ID=planted-key-id\n"
        f"DEFECTS_S3_SECRET_ACCESS_KEY={secret}\n"
        "MLFLOW_TRACKING_USERNAME=someone\n"
        f"MLFLOW_TRACKING_PASSWORD={password}\n"
    )
    # Only the .env speaks: no setting from this shell (AWS_*, MLFLOW_TRACKING_URI, ...).
    env = {k: v for k, v in os.environ.items() if k not in variable_names()}
    env.update(PYTHONPATH=str(ROOT), MLFLOW_DISABLE_TELEMETRY="true", OMP_NUM_THREADS="1")
    overrides = [
        "task=weld",
        "debug=tiny",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "model.net.min_size=128",
        "model.net.max_size=160",
        "data.batch_size=2",
        f"paths.data_dir={weld_root}",
        "hydra.verbose=[defects,__main__]",  # the package's DEBUG records too
    ]
    done = subprocess.run(
        [sys.executable, "-m", "defects.train", *overrides],
        cwd=work,
        env=env,
        capture_output=True,
        timeout=RUN_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    console = done.stdout + done.stderr
    assert done.returncode == 0, console.decode(errors="replace")[-4000:]

    # The settings were read: the bundle went to DEFECTS_MODEL_DIR, the run folder under
    # DEFECTS_OUTPUT_DIR, the run to the .env's tracking store.
    bundle = work / "models" / "weld" / "bundle.pt"
    assert bundle.is_file()
    logs = list((work / "outputs" / "hydra" / "weld").rglob("train.log"))
    assert logs and logs[0].stat().st_size > 0
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("defects-weld")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["logger.tracking_uri"] == store
    assert run.data.params["paths.model_dir"] == str(work / "models" / "weld")

    planted = [secret.encode(), password.encode()]
    texts = {"console": console}
    texts |= {f"param {k}": f"{k}={v}".encode() for k, v in run.data.params.items()}
    texts |= {f"tag {k}": f"{k}={v}".encode() for k, v in run.data.tags.items()}
    files = [p for p in work.rglob("*") if p.is_file() and p != env_file]
    assert {bundle, logs[0], work / "mlruns.db"} <= set(files)
    assert any(p.suffix == ".yaml" and p.parent.name == ".hydra" for p in files)
    assert any("mlartifacts" in p.parts and p.name == "bundle.pt" for p in files)
    texts |= {str(p.relative_to(work)): p.read_bytes() for p in files}
    leaks = [where for where, text in texts.items() for value in planted if value in text]
    assert not leaks, f"a planted secret appears in {leaks}"


def test_provoked_error_names_the_variable_only(
    machine: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What `python -m defects.train` says before Hydra starts (settings.start_app) when a
    secret was pasted into the device variable: one line, the variable's name, no value."""
    secret = f"planted{uuid.uuid4().hex}"
    (machine / ".env").write_text(f"DEFECTS_S3_SECRET_ACCESS_KEY={secret}\n")
    monkeypatch.setenv("DEFECTS_DEVICE", secret)
    started = []
    with pytest.raises(SystemExit) as stopped:
        start_app(lambda: started.append(True))
    assert not started
    assert str(stopped.value.code) == (
        "defects: environment or .env: DEFECTS_DEVICE: "
        "Input should be 'auto', 'cpu', 'cuda' or 'mps'"
    )
    printed = capsys.readouterr()
    assert secret not in printed.out + printed.err
