"""Streamed text pieces join to exactly the decoded text, also when a character spans tokens."""
import random

import pytest

from bone.generation import TextStream
from bone.generation.stream import decode

TEXTS = ["Tom has 3 apples. He buys 5 more!", "héllo wörld — 世界 🎉🙂 ok", "a\n\n  b\tc  ", "🎉", "x 🙂"]


def _stream(tokenizer, ids):
    stream = TextStream(tokenizer)
    pieces = [stream.push(t) for t in ids] + [stream.finish()]
    return pieces, stream.text


def _check(tokenizer, ids):
    pieces, text = _stream(tokenizer, ids)
    assert "".join(pieces) == text == decode(tokenizer, ids)
    return pieces


@pytest.fixture(scope="module")
def metaspace_tokenizer():
    """A SentencePiece-style tokenizer (Metaspace: '▁' marks a word's leading space), trained offline."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    trained = Tokenizer(models.BPE(unk_token="<unk>"))
    trained.pre_tokenizer = pre_tokenizers.Metaspace()
    trained.train_from_iterator(["the cat sat on the mat", "hello world, hello there"] * 20,
                                trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "</s>"]))
    bpe = json.loads(trained.to_str())["model"]
    vocab = dict(bpe["vocab"])
    for i in range(256):  # byte-fallback tokens: any character outside the vocabulary becomes its UTF-8 bytes
        vocab.setdefault(f"<0x{i:02X}>", len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in bpe["merges"]]
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Sequence([decoders.Metaspace(), decoders.ByteFallback(), decoders.Fuse()])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def world_tokenizer():
    from bone.models.rwkv import WorldTokenizer

    return WorldTokenizer()


@pytest.mark.parametrize("text", TEXTS)
def test_encoded_text_streams_back_exactly(text, tokenizer, metaspace_tokenizer, world_tokenizer):
    for tok in (tokenizer, metaspace_tokenizer, world_tokenizer):
        ids = tok.encode(text, add_special_tokens=False)
        _check(tok, ids)
        assert decode(tok, ids) == text


def test_a_split_character_is_held_back_until_complete(tokenizer):
    ids = tokenizer.encode("ab🎉", add_special_tokens=False)
    emoji_tokens = len(ids) - len(tokenizer.encode("ab", add_special_tokens=False))
    assert emoji_tokens > 1  # the byte-level vocabulary splits the 4-byte emoji
    pieces = _check(tokenizer, ids)
    assert "\ufffd" not in "".join(pieces)
    assert pieces[-emoji_tokens - 1:-2] == [""] * (emoji_tokens - 1)  # nothing until its last byte
    assert pieces[-2] == "🎉"


def test_metaspace_spaces_stay_between_words(metaspace_tokenizer):
    ids = metaspace_tokenizer.encode("hello world the cat", add_special_tokens=False)
    pieces = _check(metaspace_tokenizer, ids)
    assert "".join(pieces) == "hello world the cat" and any(p.startswith(" ") for p in pieces)


@pytest.mark.parametrize("seed", range(3))
def test_random_token_sequences_stream_exactly(seed, tokenizer, metaspace_tokenizer, world_tokenizer):
    """Any ids (lone bytes of a character, specials, invalid UTF-8) join to decode(ids)."""
    rng = random.Random(seed)
    for _ in range(30):
        _check(tokenizer, [rng.randrange(len(tokenizer)) for _ in range(rng.randrange(1, 30))])
    world_ids = list(world_tokenizer._tok.idx2token)
    for _ in range(30):
        _check(world_tokenizer, [0] + [rng.choice(world_ids) for _ in range(rng.randrange(1, 30))])
    words = [i for t, i in metaspace_tokenizer.get_vocab().items() if not t.startswith("<")]
    for _ in range(30):
        _check(metaspace_tokenizer, [rng.choice(words) for _ in range(rng.randrange(1, 30))])


def test_byte_fallback_revising_given_out_text_does_not_stall_the_stream(metaspace_tokenizer):
    """'[' then an invalid byte: the byte-fallback decoder turns the whole run into U+FFFD after
    '[' was given out; the stream goes on and later words still arrive."""
    tok = metaspace_tokenizer
    ids = tok.convert_tokens_to_ids(["<0x5B>", "<0xDC>", "<0xCF>"]) + tok.encode(" sat on the mat", add_special_tokens=False)
    pieces, text = _stream(tok, ids)
    assert pieces[0] == "[" and "".join(pieces) == text
    assert text.endswith(" sat on the mat") and decode(tok, ids).endswith(" sat on the mat")
