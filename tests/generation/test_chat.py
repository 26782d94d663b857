"""ChatSession: replies equal generating from the whole history, while each turn reads only what
is new (Llama: the KV cache up to the first difference; RWKV: the state, never re-read)."""
import pytest
import torch

import bone
from bone.errors import AdapterError, DataError, UsageError
from bone.generation import ChatSession, GenerationConfig, generate, generate_ids, prompt_format

TURNS = ["What is 3 + 4?", "And 7 + 5?", "Thanks, and 2 + 2?"]
GREEDY = GenerationConfig(max_new_tokens=6)


def _replay(session, text):
    """The reply a fresh generate() gives to the session's history plus `text`."""
    return generate(session.model, session.tokenizer, [session.messages + [{"role": "user", "content": text}]],
                    session.fmt, session.cfg)[0]


def _stop_at_third_token(model, tokenizer, fmt):
    """Make the first reply end with a stop token (its third greedy token), like a real eos."""
    first = generate(model, tokenizer, [[{"role": "user", "content": TURNS[0]}]], fmt, GREEDY)[0].token_ids
    model.generation_config = type("GenerationConfig", (), {"eos_token_id": [tokenizer.eos_token_id, first[2]]})()


def test_llama_chat_equals_regenerating_the_rendered_history(llama, tokenizer, fed):
    fmt = prompt_format(tokenizer, "chat")
    _stop_at_third_token(llama, tokenizer, fmt)
    session = ChatSession(llama, tokenizer, fmt, GREEDY, system="Be brief.")
    counter = fed(llama)
    for i, text in enumerate(TURNS):
        want = _replay(session, text)
        counter.take()
        pieces = list(session.send(text))
        read, reply = counter.take(), session.last
        assert reply.token_ids == want.token_ids and "".join(pieces) == reply.text == want.text
        assert session.messages[-2:] == [{"role": "user", "content": text}, {"role": "assistant", "content": reply.text}]
        history = fmt.prompt_ids(session.messages[:-1])
        assert reply.prompt_tokens == len(history)
        assert read == len(history) - reply.cached_tokens + len(reply.token_ids) - 1
        if i:  # the rendered earlier turns come from the cache: at least the previous turn's prompt
            assert reply.cached_tokens >= len(fmt.prompt_ids(session.messages[:-3]))
        stops = set(llama.generation_config.eos_token_id)  # a reply's token_ids end with the stop token that ended it
        if reply.finish_reason == "eos":
            assert reply.token_ids[-1] in stops and not set(reply.token_ids[:-1]) & stops
        else:
            assert reply.finish_reason == "length" and len(reply.token_ids) == GREEDY.max_new_tokens
            assert not set(reply.token_ids) & stops
    assert session.messages[0] == {"role": "system", "content": "Be brief."} and len(session.messages) == 7


@pytest.mark.parametrize("template", ["alpaca", "chat"])
def test_rwkv_chat_reads_only_the_new_turn(rwkv, tokenizer, plain_tokenizer, fed, template):
    """RWKV keeps its state: a turn feeds the end of the last reply and the new turn, and the reply
    equals generating from the whole token history read from scratch."""
    tok = plain_tokenizer if template == "alpaca" else tokenizer  # alpaca: no chat template (the fallback)
    fmt = prompt_format(tok, "chat")
    assert fmt.name == template and (fmt.note is not None) == (template == "alpaca")
    _stop_at_third_token(rwkv, tok, fmt)
    session = ChatSession(rwkv, tok, fmt, GREEDY)
    counter = fed(rwkv)
    history: list[int] = []
    finishes, last, last_content = [], None, []
    for i, text in enumerate(TURNS):
        if i == 0:
            new = fmt.prompt_ids([{"role": "user", "content": text}])
        else:
            new = fmt.next_turn_ids(session.messages, text)
        unfed = [] if i == 0 or last.finish_reason == "eos" else last.token_ids[-1:]  # the last reply's last token
        counter.take()
        pieces = list(session.send(text))
        read, last = counter.take(), session.last
        assert read == len(unfed) + len(new) + len(last.token_ids) - 1  # new tokens only, each once
        history += last_content + new
        want = generate_ids(rwkv, tok, [history], GREEDY)[0]
        assert last.token_ids == want.token_ids and "".join(pieces) == last.text == want.text
        last_content = last.token_ids[:-1] if last.finish_reason == "eos" else last.token_ids
        finishes.append(last.finish_reason)
    assert finishes[0] == "eos" and "length" in finishes  # both ways a reply ends were continued from


def test_reset_forgets_the_history(model, tokenizer):
    session = ChatSession(model, tokenizer, prompt_format(tokenizer, "chat"), GREEDY)
    first = "".join(session.send(TURNS[0]))
    list(session.send(TURNS[1]))
    session.reset()
    assert session.messages == []
    assert "".join(session.send(TURNS[0])) == first
    assert session.last.token_ids == _replay_fresh(model, tokenizer, TURNS[0]).token_ids


def _replay_fresh(model, tokenizer, text):
    return generate(model, tokenizer, [[{"role": "user", "content": text}]], prompt_format(tokenizer, "chat"), GREEDY)[0]


def test_switching_adapters_keeps_the_history_and_reads_it_again(llama, tokenizer, fed, randomize):
    bone.apply(llama, bone.BoneConfig(r=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    blocks = {}
    for name, seed in (("a", 1), ("b", 2)):
        randomize(llama, std=0.3, seed=seed)
        blocks[name] = [layer.bone_block.detach().clone() for _, layer in bone.bone_layers(llama)]

    def use(name):  # stands in for bone.use(model, name): the named adapter's blocks become the active ones
        if name not in blocks:
            raise AdapterError(f"no adapter named {name!r}; loaded: {sorted(blocks)}")
        with torch.no_grad():
            for (_, layer), block in zip(bone.bone_layers(llama), blocks[name]):
                layer.bone_block.copy_(block)

    fmt = prompt_format(tokenizer, "chat")
    session = ChatSession(llama, tokenizer, fmt, GREEDY, switch_adapter=use)
    session.use_adapter("a")
    list(session.send(TURNS[0]))
    counter = fed(llama)
    with pytest.raises(AdapterError, match="no adapter named 'c'"):
        session.use_adapter("c")
    assert session.adapter == "a" and len(session.messages) == 2  # nothing changed
    session.use_adapter("b")
    want = _replay(session, TURNS[1])  # adapter b on the whole history
    counter.take()
    list(session.send(TURNS[1]))
    assert session.last.token_ids == want.token_ids
    assert session.last.cached_tokens == 0  # nothing computed with adapter a was reused
    assert counter.take() == session.last.prompt_tokens + len(session.last.token_ids) - 1
    with pytest.raises(UsageError, match="no named adapters"):
        ChatSession(llama, tokenizer, fmt, GREEDY).use_adapter("a")


def test_an_interrupted_reply_is_kept_and_the_chat_goes_on(model, tokenizer):
    session = ChatSession(model, tokenizer, prompt_format(tokenizer, "chat"), GenerationConfig(max_new_tokens=12))
    stream = session.send(TURNS[0])
    shown = next(stream)
    stream.close()  # the consumer stops (e.g. Ctrl-C in the terminal)
    assert session.last.finish_reason == "interrupted" and session.last.text.startswith(shown)
    assert session.messages[-1] == {"role": "assistant", "content": session.last.text}
    want = _replay(session, TURNS[1])
    list(session.send(TURNS[1]))
    assert session.last.token_ids == want.token_ids


def test_an_empty_message_is_refused(llama, tokenizer):
    session = ChatSession(llama, tokenizer, prompt_format(tokenizer, "chat"), GREEDY)
    with pytest.raises(DataError, match="empty"):
        session.send("  ")  # refused at the call, before any iteration
    assert session.messages == []


def test_a_conversation_past_the_context_is_refused_and_kept(llama, tokenizer):
    session = ChatSession(llama, tokenizer, prompt_format(tokenizer, "chat"), GenerationConfig(max_new_tokens=480))
    list(session.send(TURNS[0]))
    before = list(session.messages)
    with pytest.raises(DataError, match=r"the conversation has \d+ tokens; .* context of 512 tokens: start over"):
        session.send(TURNS[1])
    assert session.messages == before
