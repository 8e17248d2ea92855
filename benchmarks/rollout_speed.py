"""Rollout tokens/s: our HF engine vs `transformers` `model.generate` (and vLLM where installed), side by side.

All sample the same batch with the same settings (temperature, top-p) for `--new-tokens` tokens (eos disabled
for the HF engine and `generate`, so their token counts are equal; vLLM's generated tokens are counted),
alternating over `--repeats` rounds; the ratio of medians is the headline. On a GPU machine the model runs on
CUDA; `--hidden-size`/`--layers` build a larger model from the embedded architecture (e.g. `--hidden-size 1024
--layers 24` for a few hundred million parameters; nothing is downloaded). Writes JSON.

    python benchmarks/rollout_speed.py --out bench_results/rollout_speed.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlsd_lab.models import build_tiny_qwen2, count_parameters
from rlsd_lab.prompts import render_prompt
from rlsd_lab.rollout import SamplingParams
from rlsd_lab.rollout.hf_engine import HFRolloutEngine, left_pad
from rlsd_lab.tasks import ArithTask
from rlsd_lab.tokenizer import build_char_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden-size", type=int, help="override the embedded architecture's width")
    parser.add_argument("--layers", type=int, help="override the embedded architecture's depth")
    parser.add_argument("--model-dir", type=Path, help="a saved model (benchmarks/random_policy.py) instead")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--out", type=Path, default=ROOT / "bench_results" / "rollout_speed.json")
    args = parser.parse_args()

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.model_dir:
        tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
        model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=getattr(torch, args.dtype))
    else:
        tokenizer = build_char_tokenizer()
        # Speed does not depend on the weights: the embedded architecture, randomly initialised.
        architecture = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "tiny.yaml").architecture)
        if args.hidden_size:
            heads = args.hidden_size // 64
            architecture.update(hidden_size=args.hidden_size, intermediate_size=4 * args.hidden_size,
                                num_attention_heads=heads, num_key_value_heads=max(1, heads // 4))
        if args.layers:
            architecture["num_hidden_layers"] = args.layers
        model = build_tiny_qwen2(tokenizer, architecture).to(getattr(torch, args.dtype))
    model = model.to(device).eval()
    model.generation_config.eos_token_id = None
    problems = ArithTask().problems("train", args.prompts, seed=0)
    prompts = [tokenizer.encode(render_prompt(p.question), add_special_tokens=False) for p in problems]
    engine = HFRolloutEngine(model, tokenizer.pad_token_id, stop_ids=[], seed=0)  # no stop: fixed length
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=args.temperature, top_p=args.top_p,
                            n=args.group_size)
    ids, mask = left_pad([p for p in prompts for _ in range(args.group_size)], tokenizer.pad_token_id)
    ids, mask = ids.to(device), mask.to(device)

    def ours() -> int:
        return int(engine.generate(prompts, params).response_mask.sum())

    @torch.no_grad()
    def hf_generate() -> int:
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=args.temperature,
                             top_p=args.top_p, top_k=0, max_new_tokens=args.new_tokens,
                             pad_token_id=tokenizer.pad_token_id)
        return int(out.shape[0] * (out.shape[1] - ids.shape[1]))

    contenders = {"hf_engine": ours, "transformers_generate": hf_generate}
    if importlib.util.find_spec("vllm"):
        from rlsd_lab.rollout import build_engine

        vllm = build_engine("vllm", model, tokenizer, seed=0)
        top_p_one = SamplingParams(max_new_tokens=args.new_tokens, temperature=args.temperature, n=args.group_size)
        contenders["vllm"] = lambda: int(vllm.generate(prompts, top_p_one).response_mask.sum())  # top-p 1 only
    for run in contenders.values():  # warm-up
        run()
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.repeats):
        for name, run in contenders.items():
            start = time.perf_counter()
            tokens = run()
            rates[name].append(tokens / (time.perf_counter() - start))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    result = {
        "benchmark": "rollout_speed",
        "batch": {"prompts": args.prompts, "group_size": args.group_size, "new_tokens": args.new_tokens,
                  "temperature": args.temperature, "top_p": args.top_p},
        "model_parameters": count_parameters(model), "vocab_size": model.config.vocab_size, "dtype": args.dtype,
        "tokens_per_s_median": medians,
        "tokens_per_s_all": rates,
        "ratio_hf_engine_over_generate": medians["hf_engine"] / medians["transformers_generate"],
        "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name() if device == "cuda" else None},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("tokens_per_s_median", "ratio_hf_engine_over_generate")}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
