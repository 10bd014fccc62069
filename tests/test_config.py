"""The Hydra tree composes for every group option, and bad config fails before data is read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from defects.config import ConfigError, validate_config
from defects.kinds import get_kind
from defects.kinds.gated.thresholds import ThresholdSearch
from defects.runtime import make_search
from tests.conftest import CONFIG_DIR, compose_config

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("trainer", ["cpu", "gpu", "ddp"])
def test_trainer_groups_compose(trainer: str) -> None:
    cfg = compose_config(["task=weld", f"trainer={trainer}"])
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"
    if trainer != "cpu":
        assert cfg.trainer.precision == "16-mixed"
    validate_config(cfg)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiments_compose_and_validate(experiment: str) -> None:
    cfg = compose_config([f"experiment={experiment}"])
    validate_config(cfg)
    assert OmegaConf.to_container(cfg, resolve=True)


def test_weld_defaults_are_offline_and_plain() -> None:
    cfg = compose_config(["task=weld"])
    assert cfg.task_name == "weld"
    assert cfg.model.net.weights is None and cfg.model.net.weights_backbone is None
    assert list(cfg.class_names) == ["porosity", "crack", "lack_of_fusion", "slag_inclusion"]
    assert cfg.data.class_names == cfg.class_names


def test_steel_defaults_are_offline_and_plain() -> None:
    cfg = compose_config(["task=steel"])
    validate_config(cfg)
    assert cfg.task_name == "steel" and cfg.data.layout == "severstal"
    assert cfg.model.net.encoder_weights is None and cfg.model.net.gate_weights is None
    assert cfg.model.design in ("separate", "two_heads", "shared_backbone")
    assert cfg.prepare._target_.endswith("generate_steel_dataset")


def test_override_values_reach_the_objects() -> None:
    cfg = compose_config(
        ["task=weld", "data.batch_size=4", "trainer.max_epochs=2", "trainer.precision=bf16-mixed"]
    )
    validate_config(cfg)
    assert (cfg.data.batch_size, cfg.trainer.max_epochs, cfg.trainer.precision) == (
        4,
        2,
        "bf16-mixed",
    )


def test_unknown_key_is_refused_by_hydra() -> None:
    with pytest.raises(ConfigCompositionException, match="batch_sise"):
        compose_config(["task=weld", "data.batch_sise=4"])


def test_unknown_option_is_refused_by_hydra() -> None:
    with pytest.raises(ConfigCompositionException, match="wled"):
        compose_config(["task=wled"])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.batch_size=four", "data.batch_size"),
        ("data.strict=maybe", "data.strict"),
        ("trainer.precision=17-mixed", "trainer.precision"),
        ("optimizer.lr=fast", "model.optimizer.lr"),
    ],
)
def test_wrong_type_is_refused_before_data(override: str, key: str) -> None:
    cfg = compose_config(["task=weld", override])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(cfg)


def test_new_key_in_a_node_is_refused() -> None:
    cfg = compose_config(["task=weld", "+data.batchsize=4"])
    with pytest.raises(ConfigError, match=r"data\.batchsize: not a parameter"):
        validate_config(cfg)


def test_cli_fails_fast_naming_the_key(tmp_path: Path) -> None:
    """The real entry point stops on a wrong value before reading the (missing) data."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "defects.train",
            "task=weld",
            "data.batch_size=abc",
            f"paths.data_dir={tmp_path / 'nothing'}",
            "logger=none",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "data.batch_size" in result.stderr
    assert not (tmp_path / "nothing").exists()


def test_tune_objective_is_checked_before_data() -> None:
    cfg = compose_config(["task=steel", "tune.objective=dice"])
    allowed = "kaggle_dice, defective_dice, class_iou, recall_at_fpr"
    with pytest.raises(ConfigError, match=rf"tune\.objective: got 'dice' .*{allowed}"):
        validate_config(cfg)
    cfg = compose_config(["task=steel", "tune.target_recall=0"])
    validate_config(cfg)  # a float: its range is the search's to check, when built
    with pytest.raises(ConfigError, match=r"tune\.target_recall: 0"):
        make_search(cfg)


@pytest.mark.parametrize(
    ("overrides", "objective"),
    [
        (["task=steel"], "kaggle_dice"),  # Severstal's metric, the pipeline's figures
        (["experiment=steel_magnetic_tile"], "defective_dice"),  # mostly clean tiles
        (["task=pipe"], "kaggle_dice"),
        (["task=steel", "tune.objective=recall_at_fpr"], "recall_at_fpr"),
    ],
)
def test_each_segmentation_dataset_names_its_objective(overrides: list, objective: str) -> None:
    search = make_search(compose_config(overrides))
    assert isinstance(search, ThresholdSearch) and search.objective == objective


def test_a_box_kind_refuses_a_threshold_search() -> None:
    assert make_search(compose_config(["task=weld"])) is None
    with pytest.raises(ConfigError, match="fasterrcnn kind takes no tune settings"):
        get_kind("fasterrcnn").tune({}, None, ThresholdSearch())  # type: ignore[arg-type]
