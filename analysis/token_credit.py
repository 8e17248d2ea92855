"""Token-credit heatmaps: a correct and a wrong response to the same prompt, coloured token by token, the four
methods' credits one row each, on a diverging colour map centred on "no change" (white = 0); the wrong
response's first error (the arith task locates it exactly) is boxed, so one can see which method blames it.
PNG and a self-contained HTML page.

    python -m analysis.token_credit <run dir> --out figures/      # its final_policy, or --policy DIR

Each row is scaled to its own largest |credit| (printed in the row label): the methods' credits differ by orders
of magnitude (GRPO's are advantages ~1, divergence-OPSD's are gradients ~1e-3).
"""

from __future__ import annotations

import argparse
import html
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from analysis.runs import find_run_dirs, run_labels  # noqa: E402
from methods import build_objective  # noqa: E402
from rlsd_lab.credit import credits_on_fresh_rollouts  # noqa: E402
from rlsd_lab.credit_quality import decoded_tokens, first_error_positions  # noqa: E402
from rlsd_lab.models import load_policy  # noqa: E402
from rlsd_lab.tasks import build_task  # noqa: E402
from rlsd_lab.verifiers import build_verifier  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COLOURS = plt.get_cmap("RdBu")  # red = pushed down, blue = pushed up


def _norm(values: list[float]) -> TwoSlopeNorm:
    scale = max((abs(v) for v in values), default=0.0) or 1.0
    return TwoSlopeNorm(vcenter=0.0, vmin=-scale, vmax=scale)


def _shown(token: str) -> str:
    return {"\n": "\\n", "<eos>": "</s>"}.get(token, token)


@dataclass
class CreditPanel:
    """One response: its tokens, each method's credit on them, and the token to box (its first error)."""

    label: str
    tokens: list[str]
    credits: dict[str, list[float]]
    first_error: int | None = None


def credit_figure(panels: list[CreditPanel], title: str, path: Path) -> Path:
    """Per panel one row per method, one cell per token, coloured by credit; the first error boxed."""
    rows = [(panel, method, values) for panel in panels for method, values in panel.credits.items()]
    width = max(6.0, 0.28 * max(len(panel.tokens) for panel in panels) + 2.5)
    fig, axes = plt.subplots(len(rows), 1, figsize=(width, 0.75 * len(rows) + 0.5 * len(panels) + 0.9),
                             squeeze=False)
    for ax, (panel, method, values) in zip(axes[:, 0], rows):
        norm = _norm(values)
        ax.imshow([values], cmap=COLOURS, norm=norm, aspect="auto")
        for i, (token, value) in enumerate(zip(panel.tokens, values)):
            ink = "white" if abs(norm(value) - 0.5) > 0.3 else "black"  # readable on dark cells
            ax.text(i, 0, _shown(token), ha="center", va="center", fontsize=8, family="monospace", color=ink)
        if panel.first_error is not None:
            ax.add_patch(Rectangle((panel.first_error - 0.5, -0.5), 1, 1, fill=False, edgecolor="black", lw=2))
        ax.set_yticks([0], [f"{method}\n|max| {norm.vmax:.2g}"], fontsize=8)
        ax.set_xticks([])
        if method == next(iter(panel.credits)):
            ax.set_title(panel.label, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("response tokens (blue: probability pushed up, red: pushed down, white: no change; "
                           "box: first error)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=200)
    plt.close(fig)
    return path


def credit_html(panels: list[CreditPanel], title: str, path: Path) -> Path:
    """A self-contained page: the same rows, hover a token for its exact credit."""
    sections = []
    for panel in panels:
        rows = []
        for method, values in panel.credits.items():
            norm = _norm(values)
            cells = "".join(
                f'<span title="{value:+.4g}" class="{"e" if i == panel.first_error else ""}" '
                f'style="background:{matplotlib.colors.to_hex(COLOURS(norm(value)))}">{html.escape(_shown(token))}'
                "</span>" for i, (token, value) in enumerate(zip(panel.tokens, values)))
            rows.append(f"<tr><th>{html.escape(method)}<br><small>|max| {norm.vmax:.2g}</small></th>"
                        f"<td class=r>{cells}</td></tr>")
        sections.append(f"<h4>{html.escape(panel.label)}</h4><table>{''.join(rows)}</table>")
    page = (f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif}td.r span{font-family:monospace;padding:2px 1px;margin:0 1px}"
            "span.e{outline:2px solid black}th{text-align:right;padding-right:1em;font-weight:normal}</style>"
            f"<h3>{html.escape(title)}</h3><p>Blue: probability pushed up; red: pushed down; white: no change; "
            f"outlined: the first error. Each row is scaled to its own largest |credit|.</p>{''.join(sections)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path


def final_policy_under(path: Path) -> Path:
    """`path`'s final_policy, or that of the first run below it with one, RLSD runs first (by seed, then name)."""
    if (path / "final_policy").exists():
        return path / "final_policy"
    labelled = [run_labels(run) for run in find_run_dirs([path]) if (run / "final_policy").exists()]
    if not labelled:
        raise FileNotFoundError(f"no run with a final_policy/ at or below {path}")
    first = min(labelled, key=lambda label: (label["method"] != "rlsd", label["seed"], label["run"]))
    return Path(first["run"]) / "final_policy"


def method_objectives(beta_h: float) -> dict:
    """The four objectives with the defaults of conf/method/*.yaml (hybrid with the given beta_h)."""
    loss = OmegaConf.load(ROOT / "conf" / "config.yaml").loss
    objectives = {}
    for name in ("grpo", "opsd", "hybrid", "rlsd"):
        cfg = OmegaConf.load(ROOT / "conf" / "method" / f"{name}.yaml")
        if name == "hybrid":
            cfg.beta_h = beta_h
        objectives[name] = build_objective(cfg, loss)
    return objectives


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, nargs="?", help="a run directory (uses its final_policy), or a folder of "
                        "runs (uses the first RLSD run's, else the first run's)")
    parser.add_argument("--policy", type=Path, help="a model directory instead of a run's final_policy")
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--beta-h", type=float, default=0.1)
    parser.add_argument("--problem", type=int, default=0, help="index into the validation problems")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tries", type=int, default=20, help="problems to try for a group with A != 0")
    args = parser.parse_args(argv)
    if args.policy is None and args.run is None:
        parser.error("give a run directory or --policy")
    policy = args.policy or final_policy_under(args.run)
    model, tokenizer = load_policy(policy)
    task_cfg = OmegaConf.load(ROOT / "conf" / "task" / "arith.yaml")
    task = build_task(task_cfg)
    objectives, verifier = method_objectives(args.beta_h), build_verifier(task_cfg.name)
    # From --problem on, the first problem whose sampled group holds a correct and a wrong response (so A != 0).
    for problem in task.problems("val", args.problem + args.tries, seed=0)[args.problem:]:
        ids, scored, credits = credits_on_fresh_rollouts(model, tokenizer, objectives, problem, verifier,
                                                         seed=args.seed)
        if bool((scored.rewards == 1.0).any() and (scored.rewards < 1.0).any()):
            break
    panels = []
    for outcome, rows in (("correct", scored.rewards == 1.0), ("wrong", scored.rewards < 1.0)):
        if not bool(rows.any()):
            continue  # every response of the tried problems had this other outcome
        row = int(torch.argmax(rows.int()))
        length = int(scored.response_mask[row].sum())
        response = ids[row, :length].tolist()
        error = None
        if outcome == "wrong":
            text = tokenizer.decode(response, skip_special_tokens=True)
            error = first_error_positions([text], [problem], task.first_error, [decoded_tokens(tokenizer, response)],
                                          [length])[0]
        advantage = float(credits["grpo"][row, 0])
        panels.append(CreditPanel(f"{outcome} response (reward {float(scored.rewards[row]):.0f}, A={advantage:+.2f})",
                                  tokenizer.convert_ids_to_tokens(response),
                                  {name: credit[row, :length].tolist() for name, credit in credits.items()}, error))
    title = f"Q:{problem.question}  (policy {policy})"
    for path in (credit_figure(panels, title, args.out / "token_credit.png"),
                 credit_html(panels, title, args.out / "token_credit.html")):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
