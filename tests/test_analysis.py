"""The analysis functions on small synthetic run directories, and the CLIs."""

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from analysis.runs import load_runs
from analysis.stability import seed_statistics, stability_figure
from analysis.table import mean_ci, results_table, to_latex, to_markdown

ROOT = Path(__file__).resolve().parents[1]


def make_run(root: Path, name: str, method: str, seed: int, accuracy: list[float], extra=None, overrides=()):
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / "config_resolved.yaml").write_text(yaml.safe_dump({"seed": seed, "method": {"name": method}}))
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"method={method}", f"seed={seed}",
                                                                    *overrides]))
    rows = [{"step": 10 * i, "val/accuracy": a} for i, a in enumerate(accuracy)]
    rows += [{"step": 10 * i + 1, **(extra or {})} for i in range(len(accuracy))] if extra else []
    pd.DataFrame(rows).to_csv(run / "metrics.csv", index=False)
    return run


@pytest.fixture
def runs_root(tmp_path):
    shared = ["++method.beta_h=0.1"]  # given to every run of a sweep: not part of any label
    credit = {"credit/first_error_top1": 0.05, "credit/first_error_top1_random": 0.05,
              "credit/first_error_rank": 12.0, "credit/first_error_rank_random": 12.0}
    make_run(tmp_path, "a", "grpo", 1, [0.3, 0.6, 0.9], extra={"train/entropy": 0.2, **credit}, overrides=shared)
    make_run(tmp_path, "b", "grpo", 2, [0.3, 0.5, 0.7, 0.8], overrides=shared)  # longer, no entropy logged
    make_run(tmp_path, "c", "rlsd", 1, [0.3, 0.85], overrides=shared)  # single seed, stopped early
    make_run(tmp_path, "d", "opsd", 1, [0.3, 0.1], overrides=[*shared, "method.support=teacher_top1"])
    return tmp_path


def test_load_runs_is_tidy_and_labels_variants(runs_root):
    runs = load_runs([runs_root])
    assert set(runs.columns) == {"run", "method", "seed", "variant", "step", "metric", "value"}
    assert set(runs["variant"]) == {"grpo", "rlsd", "opsd method.support=teacher_top1"}
    assert runs["value"].notna().all()
    assert set(runs[runs["metric"] == "train/entropy"]["method"]) == {"grpo"}


def test_seed_statistics_handle_runs_of_different_lengths(runs_root):
    stats = seed_statistics(load_runs([runs_root]), "val/accuracy")
    grpo = stats[stats["variant"] == "grpo"].set_index("step")
    assert grpo.loc[20, "count"] == 2 and grpo.loc[20, "mean"] == pytest.approx(0.8)
    assert grpo.loc[30, "count"] == 1 and grpo.loc[30, "mean"] == pytest.approx(0.8)


def test_results_table_by_hand(runs_root):
    table = results_table(load_runs([runs_root]), threshold=0.8).set_index("variant")
    mean, half = table.loc["grpo", "final"]
    assert mean == pytest.approx(0.85) and half == pytest.approx(12.706 * math.sqrt(0.005) / math.sqrt(2))
    assert table.loc["grpo", "best"][0] == pytest.approx(0.85)
    assert table.loc["grpo", "steps_to_threshold"][0] == pytest.approx(25.0)  # 20 and 30
    assert table.loc["rlsd", "reached"] == "1/1" and math.isnan(table.loc["rlsd", "final"][1])
    assert table.loc["opsd method.support=teacher_top1", "reached"] == "0/1"
    markdown = to_markdown(table.reset_index(), 0.8)
    assert "| grpo | 2 | 0.850 ± " in markdown and "| - | 0/1 |" in markdown
    latex = to_latex(table.reset_index(), 0.8)
    assert r"\begin{tabular}" in latex and r"$\pm$" in latex and r"method.support=teacher\_top1" in latex


def test_steps_to_match_a_baselines_final_accuracy_by_hand(runs_root):
    """GRPO's mean final accuracy is 0.85 (0.9 and 0.8): RLSD reaches it at step 10, GRPO's seeds at 20 and
    never, OPSD never."""
    table = results_table(load_runs([runs_root]), threshold=0.8, baseline="grpo").set_index("variant")
    assert table.loc["rlsd", "steps_to_match"][0] == 10.0 and table.loc["rlsd", "matched"] == "1/1"
    assert table.loc["grpo", "steps_to_match"][0] == 20.0 and table.loc["grpo", "matched"] == "1/2"
    assert table.loc["opsd method.support=teacher_top1", "matched"] == "0/1"
    assert "steps to match grpo (0.850)" in to_markdown(table.reset_index(), 0.8)
    with pytest.raises(SystemExit, match="no such variant"):
        results_table(load_runs([runs_root]), threshold=0.8, baseline="nope")


def test_mean_ci():
    assert mean_ci([1.0])[0] == 1.0 and math.isnan(mean_ci([1.0])[1])
    assert mean_ci([1.0, 3.0]) == pytest.approx((2.0, 12.706 * math.sqrt(2) / math.sqrt(2)))
    assert math.isnan(mean_ci([])[0])


def test_stability_figure_skips_missing_panels(runs_root, tmp_path):
    paths = stability_figure(load_runs([runs_root]), tmp_path / "figs")
    assert all(p.exists() and p.stat().st_size > 10_000 for p in paths)
    with pytest.raises(ValueError, match="none of the metrics"):
        stability_figure(pd.DataFrame({"run": ["x"], "method": ["m"], "seed": [1], "variant": ["m"], "step": [0],
                                       "metric": ["other"], "value": [1.0]}), tmp_path / "figs")


def test_no_runs_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run directories"):
        load_runs([tmp_path])


@pytest.mark.parametrize("module", ["analysis.table", "analysis.stability", "analysis.credit_quality"])
def test_cli_smoke(runs_root, tmp_path, module):
    result = subprocess.run([sys.executable, "-m", module, str(runs_root), "--out", str(tmp_path / "out")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wrote" in result.stdout
    assert any((tmp_path / "out").iterdir())


def test_token_credit_png_and_html(tmp_path):
    from analysis.token_credit import CreditPanel, credit_figure, credit_html

    tokens = ["1", "+", "2", "\n", "A", ":", "3", "<eos>"]
    credits = {"grpo": [0.5] * 8, "rlsd": [0.4, 0.5, 0.6, 0.5, 0.5, 0.5, 0.55, 0.5], "opsd": [0.0] * 8}
    wrong = CreditPanel("wrong", tokens, {name: [-v for v in values] for name, values in credits.items()}, 2)
    panels = [CreditPanel("correct", tokens, credits), wrong]
    png = credit_figure(panels, "test", tmp_path / "c.png")
    page = credit_html(panels, "test <title>", tmp_path / "c.html").read_text()
    assert png.stat().st_size > 5_000
    assert page.count("<tr>") == 6 and "test &lt;title&gt;" in page and 'title="+0.6"' in page
    assert page.count('class="e"') == 3  # the first error outlined in each method's row of the wrong response
    assert "http" not in page  # self-contained


def test_credit_quality_table_reads_first_and_last_step(runs_root):
    from analysis.credit_quality import credit_table

    table = credit_table(load_runs([runs_root]))
    assert "| grpo | first_error_top1 | 0.050 | 0.050 |" in table
    assert "| grpo (random ranking) | first_error_rank | 12.000 | 12.000 |" in table


def test_token_credit_cli_on_a_model_directory(tmp_path, tiny_model, tokenizer):
    tiny_model.save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    result = subprocess.run([sys.executable, "-m", "analysis.token_credit", "--policy", str(tmp_path / "policy"),
                             "--out", str(tmp_path / "out"), "--tries", "2"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "out" / "token_credit.png").exists() and (tmp_path / "out" / "token_credit.html").exists()


def test_wandb_offline_run_reads_like_its_csv(tmp_path, tiny_model, tokenizer):
    """logger=wandb works offline with no login, and the analysis reads the wandb file alone."""
    from rlsd_lab.train import run
    from tests.test_end_to_end import FAST, compose_config

    tiny_model.save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    cfg = compose_config(FAST + [f"model.path={tmp_path / 'policy'}", "logger=wandb"])
    run(cfg, tmp_path / "runs" / "wandb_run")
    run_dir = tmp_path / "runs" / "wandb_run"
    from_csv = load_runs([run_dir])
    (run_dir / "metrics.csv").rename(tmp_path / "metrics.csv.bak")
    from_wandb = load_runs([tmp_path / "runs"])
    key = ["step", "metric"]
    merged = from_csv.merge(from_wandb, on=key, suffixes=("_csv", "_wandb"))
    assert len(merged) == len(from_csv) > 50
    assert (merged["value_csv"] - merged["value_wandb"]).abs().max() < 1e-6


def test_token_credit_picks_the_first_rlsd_run_of_a_folder(runs_root):
    from analysis.token_credit import final_policy_under

    for name in ("a", "c", "d"):
        (runs_root / name / "final_policy").mkdir()
    assert final_policy_under(runs_root) == runs_root / "c" / "final_policy"  # the RLSD run, before GRPO's
    assert final_policy_under(runs_root / "a") == runs_root / "a" / "final_policy"
    with pytest.raises(FileNotFoundError, match="no run with a final_policy"):
        final_policy_under(runs_root / "b")


def test_zoo_runs_are_labelled_by_their_arm(tmp_path):
    for name, method, arm in (("0_arm=gspo_seed1", "grpo", "gspo"), ("1_arm=cispo_seed1", "grpo", "cispo"),
                              ("2_arm=opd_seed1", "opd", "opd")):
        run = make_run(tmp_path, name, method, 1, [0.3, 0.5], overrides=[f"arm={arm}", "experiment=zoo"])
        overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides[1:]))  # arms set no method=
    runs = load_runs([tmp_path])
    assert set(runs["variant"]) == {"gspo", "cispo", "opd"}
    assert set(runs[runs["variant"] == "gspo"]["method"]) == {"grpo"}


def test_token_credit_compares_arms_on_one_policy(tmp_path, tiny_model, tokenizer):
    tiny_model.save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    result = subprocess.run([sys.executable, "-m", "analysis.token_credit", "--policy", str(tmp_path / "policy"),
                             "--out", str(tmp_path / "out"), "--tries", "2", "--arms", "grpo,gspo,cispo,sdpo"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    page = (tmp_path / "out" / "token_credit.html").read_text()
    assert all(f"<th>{arm}<br>" in page for arm in ("grpo", "gspo", "cispo", "sdpo"))
