"""The RWKV "World" tokenizer (vocabulary rwkv_vocab_v20230424, shipped in the `rwkv` package),
wrapped with the parts of the Hugging Face tokenizer interface the trainer and eval use."""
from __future__ import annotations

import functools
from pathlib import Path

import torch
from ...errors import MissingDependencyError, ModelError

VOCAB_FILE = "rwkv_vocab_v20230424.txt"
WORLD_VOCAB_SIZE = 65536  # embedding rows of every World model; ids 1..65529 are tokens, 0 is end-of-text


@functools.lru_cache(maxsize=1)
def _trie():
    """The rwkv package's TRIE_TOKENIZER over its World vocabulary (built once, ~3 s)."""
    try:
        import rwkv.rwkv_tokenizer as rt
    except ImportError as err:
        raise MissingDependencyError("the RWKV World tokenizer ships in the `rwkv` package: pip install 'bone[rwkv]' "
                          "(or pip install rwkv)") from err
    vocab = Path(rt.__file__).with_name(VOCAB_FILE)
    if not vocab.is_file():
        raise MissingDependencyError(f"{vocab} is missing from the installed rwkv package; reinstall rwkv>=0.8.30")
    return rt.TRIE_TOKENIZER(str(vocab))


class WorldTokenizer:
    """encode/decode/__call__ over the World vocabulary; eos = pad = 0 (<|endoftext|>)."""

    eos_token = pad_token = "<|endoftext|>"
    eos_token_id = pad_token_id = 0
    bos_token_id = None
    chat_template = None
    model_max_length = 1 << 30

    def __init__(self, padding_side: str = "right"):
        self.padding_side = padding_side  # "right" for training batches, "left" for generation
        self._tok = _trie()

    @property
    def vocab_size(self) -> int:
        return WORLD_VOCAB_SIZE

    def __len__(self) -> int:
        return WORLD_VOCAB_SIZE

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Greedy longest-match ids of the UTF-8 bytes of `text` (no special tokens are added)."""
        return list(self._tok.encode(text))

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Text of `ids`; id 0 is <|endoftext|> (dropped when skip_special_tokens), ids outside the
        vocabulary are dropped, and bytes that are not valid UTF-8 become U+FFFD."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        parts = []
        for i in ids:
            if i == self.eos_token_id:
                if not skip_special_tokens:
                    parts.append(self.eos_token.encode())
            elif i in self._tok.idx2token:
                parts.append(self._tok.idx2token[i])
        return b"".join(parts).decode("utf-8", errors="replace")

    def batch_decode(self, sequences, skip_special_tokens: bool = True) -> list[str]:
        return [self.decode(s, skip_special_tokens) for s in sequences]

    def __call__(self, text, add_special_tokens: bool = False, padding: bool = False, return_tensors: str | None = None):
        """{"input_ids", "attention_mask"} for a string or a list of strings (padding on padding_side)."""
        single = isinstance(text, str)
        ids = [self.encode(t) for t in ([text] if single else text)]
        if padding or return_tensors == "pt":
            width = max(len(x) for x in ids)
            left = self.padding_side == "left"
            pads = [[self.pad_token_id] * (width - len(x)) for x in ids]
            masks = [[0] * len(p) + [1] * len(x) if left else [1] * len(x) + [0] * len(p) for x, p in zip(ids, pads)]
            ids = [p + x if left else x + p for x, p in zip(ids, pads)]
        else:
            masks = [[1] * len(x) for x in ids]
        if return_tensors == "pt":
            return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(masks)}
        if single:
            return {"input_ids": ids[0], "attention_mask": masks[0]}
        return {"input_ids": ids, "attention_mask": masks}


def check_vocab(model, tokenizer) -> None:
    """Raise if the tokenizer can emit ids the model has no embedding row for."""
    n_model = model.config.vocab_size
    n_tok = len(tokenizer)
    if n_tok > n_model:
        raise ModelError(
            f"vocabulary mismatch: the tokenizer has {n_tok} ids but the checkpoint's emb/head have {n_model} rows; "
            f"this checkpoint was trained with a different tokenizer (RWKV World models have {WORLD_VOCAB_SIZE})"
        )
