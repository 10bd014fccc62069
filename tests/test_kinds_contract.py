"""Every kind in the registry learns, evaluates what `predict` writes, and exports faithfully.

One test class per kind of `defects.kinds.builtin_kinds()`, made below from the registry: a
kind added to the library without a contract in `tests/kind_contracts.py` fails here. One
overfit run per kind (class scope; xdist's `--dist loadscope` keeps a class on one worker,
so it is trained once) serves the three checks:

- learns: the loss falls and the kind's own final evaluation (its predictor on the original
  images, thresholds tuned as in a real run) finds the defects of the images it trained on.
  Every other test passes with a loss that is broken but keeps its shapes.
- evaluate equals predict: the metrics `evaluate` reports are the metrics of the files
  `defects predict` writes for the same bundle and images.
- eager equals ONNX: `defects export` -> `defects.load(folder)` gives the eager outputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import defects
from defects.kinds import builtin_kinds
from tests.conftest import compose_config
from tests.kind_contracts import CONTRACTS, Trained

# Known defects, found by these checks and left for a change of their own (README, "Export
# and ONNX"): strict, so a fix shows as a failure here until its mark is removed.
KNOWN = {
    ("fasterrcnn", "test_eager_equals_onnx"): (
        "the traced Faster R-CNN graph depends on the example's pixels, not only its size: on "
        "this overfit 128x96 model a graph traced on random pixels (any size) detects other "
        "boxes than eager, one traced on the test image itself matches; the exporter of "
        "before the 2026-12-06 swaps does the same"
    ),
}


class KindContract:
    """The three checks of one kind; `kind` is set by the subclasses made from the registry."""

    kind: str = ""

    @pytest.fixture(scope="class")
    def run(self, tmp_path_factory: pytest.TempPathFactory) -> Trained:
        if self.kind == "yolo":
            from defects.kinds.yolo import adapter

            if not adapter.available():
                pytest.skip("the yolo kind needs the yolo extra")
        if self.kind not in CONTRACTS:
            pytest.fail(f"kind '{self.kind}' has no contract in tests/kind_contracts.py")
        return CONTRACTS[self.kind].train(tmp_path_factory.mktemp(self.kind))

    @pytest.fixture(autouse=True)
    def known_defect(self, request: pytest.FixtureRequest) -> None:
        reason = KNOWN.get((self.kind, request.node.originalname))
        if reason:
            # Not strict: whether the trace on random pixels goes astray depends on the
            # overfit weights, which move with any change to training (it passed on
            # 2026-12-07 with channels-last training, failed before).
            request.applymarker(pytest.mark.xfail(reason=reason, strict=False))

    def test_learns(self, run: Trained) -> None:
        CONTRACTS[self.kind].learned(run.losses, run.metrics)

    def test_evaluate_equals_the_metrics_of_predict_outputs(
        self, run: Trained, tmp_path: Path
    ) -> None:
        from defects.evaluate import evaluate

        family = CONTRACTS[self.kind].family
        reported = evaluate(compose_config([*run.overrides, f"ckpt_path={run.bundle}"]))
        recomputed = family.metrics_from_predict(run, tmp_path)
        assert set(recomputed) == set(family.keys)
        for key in family.keys:
            assert recomputed[key] == pytest.approx(reported[key], abs=1e-12), key

    def test_eager_equals_onnx(self, run: Trained, tmp_path: Path) -> None:
        from defects.cli import export

        family = CONTRACTS[self.kind].family
        folder = Path(export(str(run.bundle), output=str(tmp_path / "onnx")))
        eager, onnx = defects.load(run.bundle), defects.load(folder)
        assert (eager.backend, onnx.backend) == ("eager", "onnx")
        assert onnx.kind == eager.kind and onnx.class_names == eager.class_names
        family.assert_same(eager, onnx, run.test_images)


for _name in sorted(builtin_kinds()):
    _class = type(f"TestKind_{_name}", (KindContract,), {"kind": _name})
    globals()[_class.__name__] = _class
