"""Peak memory and time of the chunked sampled-token log-prob vs a naive full log-softmax, at a 150k vocabulary.

Both compute log P(y_t) of a response under the same one-layer Qwen2 (hidden 896 and vocabulary 151,936, as
Qwen2.5-0.5B) and backpropagate through it, as a training step does. Naive: `model(...).logits` over the
response positions only (`logits_to_keep`, [B, T, V]), `log_softmax`, gather. Chunked: `rlsd_lab.logprobs.response_logprobs`, which projects `--chunk` positions at a
time and recomputes each chunk in backward, so no [B, T, V] tensor is kept. The tied embedding is frozen: its
gradient (545 MB, the same in both variants) would only dilute the ratio; the decoder layer trains. Each (variant, round) runs in a
fresh subprocess; peak memory = the process's peak RSS minus its RSS just before the computation (CPU), or
torch.cuda.max_memory_allocated minus the memory allocated before it (GPU). Rounds alternate the variants;
medians are reported with the chunked/naive ratios. Writes JSON.

    python benchmarks/logprob_memory.py --out bench_results/logprob_memory.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("naive", "chunked")


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def worker(variant: str, batch: int, length: int, vocab: int, chunk: int) -> dict:
    """One measurement in this process: forward + backward of the response log-probs, time and peak memory."""
    sys.path.insert(0, str(ROOT))
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from rlsd_lab.logprobs import response_logprobs

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=vocab, hidden_size=896, intermediate_size=1024, num_hidden_layers=1,
                         num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True)
    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    model = Qwen2ForCausalLM(config).to(device)
    model.get_output_embeddings().weight.requires_grad_(False)  # same 545 MB gradient in both: left out
    input_ids = torch.randint(0, vocab, (batch, 2 * length), device=device)
    attention = torch.ones_like(input_ids)
    if gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = rss_kib("VmRSS")
    started = time.perf_counter()
    if variant == "naive":
        logits = model(input_ids=input_ids, attention_mask=attention, logits_to_keep=length + 1).logits[:, :-1]
        logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, input_ids[:, -length:, None]).squeeze(-1)
    else:
        logprobs = response_logprobs(model, input_ids, attention, length, chunk_size=chunk).logprobs
    logprobs.mean().backward()
    if gpu:
        torch.cuda.synchronize()
        peak_mib = (torch.cuda.max_memory_allocated() - before) / 2**20
    else:
        peak_mib = (rss_kib("VmHWM") - before) / 1024
    return {"variant": variant, "seconds": time.perf_counter() - started, "peak_mib": peak_mib,
            "logprob_sum": float(logprobs.sum()), "device": device}


def measure(variant: str, args) -> dict:
    command = [sys.executable, __file__, "--worker", variant, "--batch", str(args.batch), "--length",
               str(args.length), "--vocab", str(args.vocab), "--chunk", str(args.chunk)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_results/logprob_memory.json")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--length", type=int, default=256, help="response tokens (the prompt has as many)")
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.batch, args.length, args.vocab, args.chunk)))
        return
    runs = [measure(variant, args) for _ in range(args.rounds) for variant in VARIANTS]
    summary = {}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        summary[variant] = {"seconds": statistics.median(r["seconds"] for r in mine),
                            "peak_mib": statistics.median(r["peak_mib"] for r in mine)}
    same = abs(runs[0]["logprob_sum"] - runs[1]["logprob_sum"]) <= 1e-3 * abs(runs[0]["logprob_sum"])
    result = {
        "setting": {"batch": args.batch, "response_tokens": args.length, "vocab": args.vocab, "hidden": 896,
                    "chunk": args.chunk, "rounds": args.rounds, "device": runs[0]["device"]},
        "median": summary,
        "ratio_chunked_over_naive": {"peak_memory": summary["chunked"]["peak_mib"] / summary["naive"]["peak_mib"],
                                     "time": summary["chunked"]["seconds"] / summary["naive"]["seconds"]},
        "same_logprobs": same, "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("setting", "median", "ratio_chunked_over_naive", "same_logprobs")},
                     indent=2))


if __name__ == "__main__":
    main()
