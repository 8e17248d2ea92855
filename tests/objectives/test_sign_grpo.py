"""The test-only objective through the shared invariants and a short run of the entry point."""

from pathlib import Path

import pandas as pd
import pytest

import tests.objectives.sign_grpo  # noqa: F401  (registers the objective and its schema)
from rlsd_lab.config import ConfigError
from rlsd_lab.train import run
from tests.helpers.configs import compose_config
from tests.test_end_to_end import FAST
from tests.test_invariants import SHARED_CHECKS

SEARCH_PATH = f"hydra.searchpath=[file://{Path(__file__).parent / 'conf'}]"
SELECT = [SEARCH_PATH, "method=sign_grpo"]


@pytest.mark.parametrize("check", SHARED_CHECKS, ids=lambda check: check.__name__)
def test_shared_invariants(tiny_model, tokenizer, tmp_path, check):
    check(tiny_model, tokenizer, tmp_path, SELECT)


def test_trains_through_the_entry_point_with_its_own_metric(tmp_path, model_dir):
    run(compose_config(FAST + [f"model.path={model_dir}", "+task.verifier=tests.helpers.rewards:char_parity",
                               *SELECT]), tmp_path / "run")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv").dropna(subset=["train/loss"])
    assert len(metrics) == 3 and metrics["train/sign_positive"].between(0, 1).all()


def test_its_schema_checks_its_own_values(tmp_path, model_dir):
    with pytest.raises(ConfigError, match=r"method.scale=-2.0: must be > 0"):
        run(compose_config(FAST + [f"model.path={model_dir}", *SELECT, "method.scale=-2"]), tmp_path / "run")
