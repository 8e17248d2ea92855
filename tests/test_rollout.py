import torch

from rlsd_lab.logprobs import response_logprobs
from rlsd_lab.rollout import SamplingParams, build_engine, stop_token_ids
from rlsd_lab.rollout.sampling import sample_next_token


def prompts(tokenizer):
    return [tokenizer.encode(text, add_special_tokens=False) for text in ("Q:12+34\n", "Q:1+2\n", "Q:123+456\n")]


def test_rollout_batch_shapes_masks_and_group_layout(tiny_model, tokenizer):
    batch = build_engine("hf", tiny_model, tokenizer, seed=0).generate(
        prompts(tokenizer), SamplingParams(max_new_tokens=10, n=4))
    rows, width = batch.response_ids.shape
    assert rows == 12 and width <= 10
    assert batch.prompt_ids.shape[1] == len("Q:123+456\n")
    assert (batch.prompt_mask.sum(1) == torch.tensor([8] * 4 + [6] * 4 + [10] * 4)).all()
    eos = tokenizer.eos_token_id
    for row in range(rows):
        length = int(batch.response_mask[row].sum())
        ids = batch.response_ids[row]
        assert (batch.response_mask[row, :length] == 1).all() and (batch.response_mask[row, length:] == 0).all()
        assert (ids[length:] == tokenizer.pad_token_id).all()
        assert bool(batch.finished[row]) == bool(length and ids[length - 1] == eos)
        assert (batch.logprobs[row, length:] == 0).all() and (batch.logprobs[row, :length] <= 0).all()


def test_sampling_logprobs_match_a_full_forward_pass(tiny_model, tokenizer):
    batch = build_engine("hf", tiny_model, tokenizer, seed=1).generate(
        prompts(tokenizer), SamplingParams(max_new_tokens=12, temperature=0.7, n=2))
    with torch.no_grad():
        logprobs = response_logprobs(tiny_model, batch.input_ids, batch.attention_mask,
                                     batch.response_ids.shape[1], temperature=0.7, chunk_size=5).logprobs
    torch.testing.assert_close(logprobs * batch.response_mask, batch.logprobs, atol=1e-4, rtol=1e-4)


def test_same_seed_same_samples_and_greedy_is_deterministic(tiny_model, tokenizer):
    params = SamplingParams(max_new_tokens=8, n=3)
    first = build_engine("hf", tiny_model, tokenizer, seed=7).generate(prompts(tokenizer), params)
    second = build_engine("hf", tiny_model, tokenizer, seed=7).generate(prompts(tokenizer), params)
    assert torch.equal(first.response_ids, second.response_ids)
    greedy = SamplingParams(max_new_tokens=8, temperature=0.0)
    a = build_engine("hf", tiny_model, tokenizer, seed=1).generate(prompts(tokenizer), greedy)
    b = build_engine("hf", tiny_model, tokenizer, seed=2).generate(prompts(tokenizer), greedy)
    assert torch.equal(a.response_ids, b.response_ids)


def test_greedy_matches_transformers_generate(tiny_model, tokenizer):
    ids = prompts(tokenizer)[:1]
    ours = build_engine("hf", tiny_model, tokenizer, seed=0).generate(ids, SamplingParams(8, temperature=0.0))
    reference = tiny_model.generate(torch.tensor(ids), do_sample=False, max_new_tokens=8,
                                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    length = int(ours.response_mask[0].sum())
    assert ours.response_ids[0, :length].tolist() == reference[0, len(ids[0]):len(ids[0]) + length].tolist()


def test_top_p_only_draws_from_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(2000, 1)
    tokens, logprobs = sample_next_token(logits, 1.0, 0.7, torch.Generator().manual_seed(0))
    assert set(tokens.tolist()) == {0, 1}
    # Log-probs are those of the unfiltered distribution, as the trainer recomputes them.
    torch.testing.assert_close(logprobs, torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))[tokens])


def test_chunked_logprobs_equal_unchunked(tiny_model, tokenizer):
    batch = build_engine("hf", tiny_model, tokenizer, seed=3).generate(prompts(tokenizer), SamplingParams(10, n=2))
    args = (tiny_model, batch.input_ids, batch.attention_mask, batch.response_ids.shape[1])
    whole, entropy_whole, _ = response_logprobs(*args, chunk_size=1000)
    chunked, entropy_chunked, _ = response_logprobs(*args, chunk_size=3)
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(entropy_chunked, entropy_whole)
    assert whole.requires_grad  # under autograd the chunks are checkpointed, not detached


def test_every_eos_id_of_the_generation_config_ends_a_response(tiny_model, tokenizer):
    """Chat models end a turn with a token of their generation config (Llama 3 Instruct: <|eot_id|>)."""
    ids = prompts(tokenizer)[:1]
    sampling = SamplingParams(max_new_tokens=12)  # seeded: the same draws up to the stop
    batch = build_engine("hf", tiny_model, tokenizer, seed=0).generate(ids, sampling)
    free = batch.response_ids[0, :int(batch.response_mask[0].sum())].tolist()
    position = next(i for i in range(1, len(free)) if free[i] not in free[:i])  # a token first drawn at step i
    end_of_turn = free[position]
    original = tiny_model.generation_config.eos_token_id
    tiny_model.generation_config.eos_token_id = [tokenizer.eos_token_id, end_of_turn]
    try:
        assert stop_token_ids(tiny_model, tokenizer) == [tokenizer.eos_token_id, end_of_turn]
        batch = build_engine("hf", tiny_model, tokenizer, seed=0).generate(ids, sampling)
    finally:
        tiny_model.generation_config.eos_token_id = original
    assert batch.response_ids[0].tolist() == free[:position + 1]
    assert bool(batch.finished[0]) and int(batch.response_mask[0].sum()) == position + 1
    assert stop_token_ids(tiny_model, tokenizer) == [tokenizer.eos_token_id]  # the same id twice counts once
