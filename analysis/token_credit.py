"""Token-credit heatmaps: a correct and a wrong response to the same prompt, coloured token by token, the four
methods' credits one row each, on a diverging colour map centred on "no change" (white = 0); the wrong
response's first error (the arith task locates it exactly) is boxed, so one can see which method blames it.
PNG and a self-contained HTML page.

    python -m analysis.token_credit <run dir> --out figures/      # its final_policy, or --policy DIR

The responses and every method's credit come from the training pipeline itself (RLModule.make_experience, then
rlsd_lab/credit.py): the run's own config (prompt format, task, sampling, chunk size; the defaults with
--policy alone) with each method's yaml in turn, one group of responses per method, sampled from the same seed,
so all methods score the same responses.

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

import yaml  # noqa: E402

from analysis.runs import find_run_dirs, run_labels  # noqa: E402
from methods import build_objective  # noqa: E402
from rlsd_lab.credit import token_credit  # noqa: E402
from rlsd_lab.credit_quality import decoded_tokens, first_error_positions  # noqa: E402
from rlsd_lab.logprobs import response_states  # noqa: E402
from rlsd_lab.models import load_policy  # noqa: E402
from rlsd_lab.module import RLModule  # noqa: E402
from rlsd_lab.tasks import build_task  # noqa: E402
from rlsd_lab.config import compose_config  # noqa: E402
from rlsd_lab.verifiers.pool import VerifierPool  # noqa: E402

METHODS = ("grpo", "opsd", "hybrid", "rlsd")
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


def run_overrides(run: Path | None) -> list[str]:
    """The run's own command-line overrides (.hydra/overrides.yaml) without the method and the model path."""
    path = run / ".hydra" / "overrides.yaml" if run else None
    if path is None or not path.exists():
        return []
    return [o for o in yaml.safe_load(path.read_text())
            if not o.lstrip("+~").startswith(("method", "arm=", "model.path", "hydra."))]


def method_config(overrides: list[str], method: str, policy: Path, beta_h: float, seed: int, key: str = "method"):
    """`key=method`: a method (conf/method) or an arm (conf/arm: a method with its options)."""
    extra = [f"++method.beta_h={beta_h}"] if key == "method" and method == "hybrid" else []
    # the path quoted: a sweep's run directory may hold '=' (`3_arm=opd_seed1`)
    return compose_config([*overrides, f"{key}={method}", *extra, f"model.path='{policy}'", f"seed={seed}"])


class CreditProbe:
    """One RLModule per method (or arm) around the same policy, for one group of responses at a time."""

    def __init__(self, overrides: list[str], policy: Path, beta_h: float, seed: int, out: Path,
                 methods: tuple[str, ...] = METHODS, key: str = "method"):
        self.overrides, self.policy, self.beta_h, self.seed, self.out = overrides, policy, beta_h, seed, out
        self.methods, self.key = methods, key
        self.model, self.tokenizer = load_policy(policy)
        self.cfg = method_config(overrides, methods[0], policy, beta_h, seed, key)
        self.task = build_task(self.cfg.task)
        self.verifier = VerifierPool(self.task.verifier, workers=0)

    def experience(self, method: str, problem):
        """(module, experience): a fresh module samples what any other fresh one samples (the same seed)."""
        cfg = method_config(self.overrides, method, self.policy, self.beta_h, self.seed, self.key)
        module = RLModule(cfg, self.model, self.tokenizer, build_objective(cfg.method, cfg.loss), self.verifier,
                          [], [], self.out)
        return module, module.make_experience([problem], step=0)

    def credits(self, problem) -> tuple:
        """(the GRPO experience, {method: [B, T] credit}) on one group of responses to `problem`."""
        credits, first = {}, None
        for method in self.methods:
            module, experience = self.experience(method, problem)
            first = first or experience
            if not torch.equal(experience.rollout.response_ids, first.rollout.response_ids):
                raise RuntimeError(f"{method} sampled other responses than {self.methods[0]}: not comparable")
            rollout = experience.rollout
            with torch.no_grad():
                student = response_states(self.model, rollout.input_ids, rollout.attention_mask,
                                          rollout.response_ids.shape[1])
            credits[method] = token_credit(module.objective, experience, student=student, scorer=module.scorer,
                                           micro_batch_size=module.cfg.train.micro_batch_size)
        return first, credits


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
    parser.add_argument("--arms", help="comma-separated conf/arm names to compare instead of the four methods")
    args = parser.parse_args(argv)
    if args.policy is None and args.run is None:
        parser.error("give a run directory or --policy")
    policy = args.policy or final_policy_under(args.run)
    names = tuple(args.arms.split(",")) if args.arms else METHODS
    probe = CreditProbe(run_overrides(None if args.policy else policy.parent), policy, args.beta_h, args.seed,
                        args.out, names, "arm" if args.arms else "method")
    tokenizer, task = probe.tokenizer, probe.task
    # From --problem on, the first problem whose sampled group holds a correct and a wrong response (so A != 0).
    for problem in task.problems("val", args.problem + args.tries, seed=0)[args.problem:]:
        rewards = probe.experience(names[0], problem)[1].rewards_B
        if bool((rewards == 1.0).any() and (rewards < 1.0).any()):
            break
    experience, credits = probe.credits(problem)
    ids, rewards = experience.rollout.response_ids, experience.rewards_B
    locate = getattr(task, "first_error", None)
    panels = []
    for outcome, rows in (("correct", rewards == 1.0), ("wrong", rewards < 1.0)):
        if not bool(rows.any()):
            continue  # every response of the tried problems had this other outcome
        row = int(torch.argmax(rows.int()))
        length = int(experience.response_mask_B_T[row].sum())
        response = ids[row, :length].tolist()
        error = None
        if outcome == "wrong" and locate:
            error = first_error_positions([experience.texts[row]], [problem], locate,
                                          [decoded_tokens(tokenizer, response)], [length])[0]
        advantage = float(experience.sequence_advantages_B[row])
        panels.append(CreditPanel(f"{outcome} response (reward {float(rewards[row]):.0f}, A={advantage:+.2f})",
                                  tokenizer.convert_ids_to_tokens(response),
                                  {name: credit[row, :length].tolist() for name, credit in credits.items()}, error))
    title = f"Q:{problem.question}  (policy {policy})"
    for path in (credit_figure(panels, title, args.out / "token_credit.png"),
                 credit_html(panels, title, args.out / "token_credit.html")):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
