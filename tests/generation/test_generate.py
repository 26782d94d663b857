"""Batched generation: greedy equals one by one (and transformers' generate), sampling follows the
seed, streamed pieces join to the text, each token is read once, for Llama and RWKV."""
import pytest
import torch

import bone
from bone.generation import GenerationConfig, generate, generate_ids, prompt_format

QUESTIONS = ["What is 3 + 4?", "Tom has 3 apples and buys 5 more. How many apples does he have now?", "Hi", "12 - 5"]


def _prompts(n=4):
    return [[{"role": "user", "content": q}] for q in QUESTIONS[:n]]


def _rows(tokenizer, template="chat"):
    return [prompt_format(tokenizer, template).prompt_ids(p) for p in _prompts()]


def _greedy_reference(model, prompt, n, stops):
    """Greedy decoding that re-reads the whole sequence for every token (no cache, no state)."""
    ids = list(prompt)
    for _ in range(n):
        with torch.no_grad():
            nxt = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
        ids.append(nxt)
        if nxt in stops:
            break
    return ids[len(prompt):]


def test_llama_greedy_batch_equals_one_by_one_and_transformers(llama, tokenizer):
    rows = _rows(tokenizer)
    cfg = GenerationConfig(max_new_tokens=10)
    batched = generate_ids(llama, tokenizer, rows, cfg, batch_size=4)
    alone = [generate_ids(llama, tokenizer, [r], cfg)[0] for r in rows]
    assert [c.token_ids for c in batched] == [c.token_ids for c in alone]
    for r, c in zip(rows, alone):
        ref = llama.generate(torch.tensor([r]), max_new_tokens=10, do_sample=False,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        assert c.token_ids == ref[0, len(r):].tolist()
        assert c.prompt_tokens == len(r) and c.finish_reason == "length" and len(c.token_ids) == 10


def test_a_row_that_stops_leaves_the_others_unchanged(model, tokenizer, fed):
    rows = _rows(tokenizer, "alpaca")
    free = generate_ids(model, tokenizer, rows[:1], GenerationConfig(max_new_tokens=6))[0].token_ids
    stop = free[2]  # make row 0's third token a stop token
    model.generation_config = type("GenerationConfig", (), {"eos_token_id": [tokenizer.eos_token_id, stop]})()
    counter = fed(model)
    cfg = GenerationConfig(max_new_tokens=8)
    batched = generate_ids(model, tokenizer, rows, cfg, batch_size=4)
    read = counter.take()
    alone = [generate_ids(model, tokenizer, [r], cfg)[0] for r in rows]
    assert [c.token_ids for c in batched] == [c.token_ids for c in alone]
    stops = {tokenizer.eos_token_id, stop}
    assert [c.token_ids for c in alone] == [_greedy_reference(model, r, 8, stops) for r in rows]
    first = batched[0]
    assert first.finish_reason == "eos" and first.token_ids[-1] == stop and len(first.token_ids) <= 3
    assert first.text == tokenizer.decode(first.token_ids[:-1], skip_special_tokens=True)
    # every prompt token is read once, and every generated token but each row's last once: no re-reading
    fed_new = sum(len(c.token_ids) - 1 for c in batched)
    rwkv = type(model).__name__.startswith("RWKV")  # RWKV reads each prompt alone, Llama left-pads the batch
    padding = 0 if rwkv else len(rows) * max(map(len, rows)) - sum(map(len, rows))
    assert read == sum(map(len, rows)) + padding + fed_new


def test_sampling_follows_the_seed(model, tokenizer):
    rows = _rows(tokenizer)

    def run(seed, batch_size=4):
        cfg = GenerationConfig(max_new_tokens=12, temperature=1.0, top_p=0.95, top_k=50, seed=seed)
        return [c.token_ids for c in generate_ids(model, tokenizer, rows, cfg, batch_size=batch_size)]

    assert run(1) == run(1)
    assert run(1) != run(2)
    greedy = [c.token_ids for c in generate_ids(model, tokenizer, rows, GenerationConfig(max_new_tokens=12))]
    assert run(1) != greedy


def test_streamed_pieces_join_to_the_text(model, tokenizer):
    pieces = {}
    cfg = GenerationConfig(max_new_tokens=16, temperature=1.5, seed=0)  # random tokens: split characters too
    streamed = generate(model, tokenizer, _prompts(), prompt_format(tokenizer, "chat"), cfg, batch_size=3,
                        on_text=lambda i, piece: pieces.setdefault(i, []).append(piece))
    plain = generate(model, tokenizer, _prompts(), prompt_format(tokenizer, "chat"), cfg, batch_size=3)
    assert [c.token_ids for c in streamed] == [c.token_ids for c in plain]
    for i, c in enumerate(streamed):
        assert "".join(pieces.get(i, [])) == c.text == plain[i].text
        assert c.text == tokenizer.decode(c.token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    assert sum(len(p) for p in pieces.values()) > len(pieces)  # several pieces per reply, not one at the end


def test_rwkv_greedy_batch_equals_one_by_one_and_rereading(rwkv, tokenizer):
    rows = _rows(tokenizer, "alpaca")
    cfg = GenerationConfig(max_new_tokens=8)
    batched = generate_ids(rwkv, tokenizer, rows, cfg, batch_size=3)
    alone = [generate_ids(rwkv, tokenizer, [r], cfg)[0] for r in rows]
    assert [c.token_ids for c in batched] == [c.token_ids for c in alone]
    assert [c.token_ids for c in alone] == [_greedy_reference(rwkv, r, 8, {tokenizer.eos_token_id}) for r in rows]


def test_an_unmerged_adapter_generates_like_the_merged_model(llama, tokenizer, randomize):
    rows = _rows(tokenizer)
    bone.apply(llama, bone.BoneConfig(r=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    randomize(llama, std=0.3)
    llama.train()
    cfg = GenerationConfig(max_new_tokens=8)
    unmerged = generate_ids(llama, tokenizer, rows, cfg)
    assert llama.training  # the caller's mode is given back
    with bone.disabled(llama):
        base = generate_ids(llama, tokenizer, rows, cfg)
    bone.merge(llama)
    merged = generate_ids(llama, tokenizer, rows, cfg)
    assert [c.token_ids for c in unmerged] == [c.token_ids for c in merged]
    assert [c.token_ids for c in unmerged] != [c.token_ids for c in base]


def test_left_padding_keeps_each_rows_positions(tokenizer):
    """GPT-2 has absolute position embeddings (made strong here): a left-padded row must still
    count its positions from its own first token, or the batch would differ from one by one."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=4, n_positions=256,
                                       bos_token_id=None, eos_token_id=tokenizer.eos_token_id)).eval()
    with torch.no_grad():
        model.transformer.wpe.weight.normal_(0, 1.0)
    rows = _rows(tokenizer, "alpaca")
    cfg = GenerationConfig(max_new_tokens=8)
    batched = generate_ids(model, tokenizer, rows, cfg, batch_size=4)
    assert [c.token_ids for c in batched] == [_greedy_reference(model, r, 8, {tokenizer.eos_token_id}) for r in rows]


def test_a_prompt_longer_than_the_context_is_refused_before_anything_runs(llama, tokenizer, fed):
    from bone.errors import DataError

    rows = _rows(tokenizer)
    long = rows[1] * (512 // len(rows[1]) + 1)  # the tiny Llama has 512 positions
    counter = fed(llama)
    with pytest.raises(DataError, match=r"prompt 3 has \d+ tokens; with max_new_tokens=4 .* context of 512 tokens"):
        generate_ids(llama, tokenizer, rows[:2] + [long], GenerationConfig(max_new_tokens=4))
    assert counter.take() == 0
