"""The World tokenizer wrapper and the vocabulary check."""
import pytest
import torch

from bone.models import load_tokenizer
from bone.models.rwkv import WorldTokenizer, check_vocab, load_rwkv
from rwkv_testlib import make_x070


@pytest.fixture(scope="module")
def tok():
    return WorldTokenizer()


def test_round_trip_and_special_ids(tok):
    text = "Hello world! 你好 🙂\n  x = 1 + 2"
    ids = tok.encode(text, add_special_tokens=False)
    assert all(0 < i < len(tok) for i in ids)
    assert tok.decode(ids) == text
    assert len(tok) == tok.vocab_size == 65536
    assert tok.eos_token_id == tok.pad_token_id == 0 and tok.chat_template is None
    assert tok.decode([0] + ids + [0]) == text
    assert tok.decode(ids + [0], skip_special_tokens=False) == text + "<|endoftext|>"
    assert tok.decode(torch.tensor(ids)) == text


def test_partial_utf8_and_unknown_ids_do_not_raise(tok):
    emoji = tok.encode("🙂")
    assert len(emoji) >= 1
    lone_byte = tok._tok.token2idx[b"\xc3"]  # the first byte of a 2-byte UTF-8 character, alone
    assert tok.decode([lone_byte] + tok.encode("ok")) == "\ufffdok"
    assert tok.decode([65535] + tok.encode("a")) == "a"


def test_call_pads_on_the_configured_side(tok):
    right = tok(["a b c", "a"], return_tensors="pt")
    assert right["attention_mask"].tolist()[1][0] == 1 and right["attention_mask"][1, -1] == 0
    tok_left = WorldTokenizer(padding_side="left")
    left = tok_left(["a b c", "a"], return_tensors="pt")
    assert left["attention_mask"][1, 0] == 0 and left["attention_mask"][1, -1] == 1
    assert left["input_ids"][1, -1] == tok.encode("a")[0]


def test_load_tokenizer_dispatch_and_vocab_check(tmp_path, tok):
    assert isinstance(load_tokenizer(tmp_path / "any.pth"), WorldTokenizer)
    torch.save(make_x070(C=64, vocab=65536), tmp_path / "world.pth")
    check_vocab(load_rwkv(tmp_path / "world.pth"), tok)
    torch.save(make_x070(C=64, vocab=50277), tmp_path / "pile.pth")
    with pytest.raises(ValueError, match="vocabulary mismatch.*65536 ids.*50277 rows"):
        check_vocab(load_rwkv(tmp_path / "pile.pth"), tok)
