"""Generation on the real embedded SmolLM2-135M-Instruct, and an RWKV chat with the real World
tokenizer (a tiny random RWKV sized to its 65536 ids)."""
import pytest
import torch

import bone
from bone.generation import ChatSession, GenerationConfig, generate, prompt_format


@pytest.fixture(scope="module")
def smollm2():
    return bone.load_model("smollm2-135m").eval(), bone.load_tokenizer("smollm2-135m")


@pytest.mark.integration
def test_smollm2_answers_batched_like_transformers_and_chats(smollm2):
    model, tok = smollm2
    fmt = prompt_format(tok, "chat")
    assert fmt.name == "chat" and fmt.note is None
    prompts = [[{"role": "user", "content": q}] for q in
               ("What is the capital of France?", "What is 2 + 2? Answer with a number.", "Say hello.")]
    cfg = GenerationConfig(max_new_tokens=40)
    batched = generate(model, tok, prompts, fmt, cfg, batch_size=3)
    for p, c in zip(prompts, batched):
        ids = torch.tensor([fmt.prompt_ids(p)])
        ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=40, do_sample=False)
        assert c.token_ids == ref[0, ids.shape[1]:].tolist()
    assert "Paris" in batched[0].text and "4" in batched[1].text
    assert all(c.finish_reason == "eos" and c.token_ids[-1] == tok.eos_token_id for c in batched)

    session = ChatSession(model, tok, fmt, GenerationConfig(max_new_tokens=40))
    first = "".join(session.send("What is the capital of France?"))
    second = "".join(session.send("And of Italy?"))
    assert "Paris" in first and "Rome" in second
    assert session.last.cached_tokens > len(fmt.prompt_ids(session.messages[:1]))  # turn 1 and part of its reply


def test_rwkv_chat_with_the_world_tokenizer_streams_exactly():
    from bone.models.rwkv import WorldTokenizer
    from bone.models.rwkv.checkpoint import config_from_state_dict
    from bone.models.rwkv.modeling import RWKVForCausalLM
    from rwkv_testlib import make_x070

    sd = make_x070(n_layer=1, C=64, N=64, vocab=65536, lora=(8, 8, 8, 8))
    model = RWKVForCausalLM(config_from_state_dict(sd))
    model.load_state_dict(sd)
    tok = WorldTokenizer()
    fmt = prompt_format(tok, "chat")
    assert fmt.name == "alpaca" and "no chat template" in fmt.note  # World has none: the training template
    session = ChatSession(model.eval(), tok, fmt, GenerationConfig(max_new_tokens=24, temperature=1.0, seed=0))
    for text in ("Hello 世界 🙂", "Next?"):
        pieces = list(session.send(text))
        assert "".join(pieces) == session.last.text == tok.decode(session.last.token_ids)
        assert len(pieces) > 1
