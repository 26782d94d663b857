"""RWKVForCausalLM: this project's PyTorch RWKV-7 / RWKV-6 language model, transformers-style.

Module names equal BlinkDL's checkpoint keys (`emb`, `blocks.N.{ln0,ln1,ln2,att,ffn}`, `ln_out`,
`head`), so `model.state_dict()` has exactly the keys of the .pth it was loaded from.
`model(input_ids=ids, labels=None)` returns `.logits` (B, T, vocab), `.loss` (`bone.loss.next_token_loss`,
mean over the supervised tokens) and `.state` (per layer: att shift, WKV state, ffn shift) for continuing.
`logits_to_keep` as in transformers: a (B, T) bool mask gives the logits of those positions only,
flattened `(N, vocab)` (what the trainer scores, `bone.loss.scored_mask`); 0 keeps all.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from transformers.utils import ModelOutput

from ...errors import ConfigError, DataError, UsageError
from ...loss import next_token_loss
from .config import RWKVConfig
from .generation import greedy_generate
from .layer6 import Block6
from .layer7 import Block7

BLOCKS = {"rwkv7": Block7, "rwkv6": Block6}


@dataclass
class RWKVCausalLMOutput(ModelOutput):
    loss: Tensor | None = None  # mean next-token cross entropy over labels != -100
    logits: Tensor | None = None  # (B, T, vocab)
    state: list | None = None  # per layer (att_shift (B, C), wkv (B, H, N, N), ffn_shift (B, C))


def _check_mask(attention_mask: Tensor | None) -> None:
    if attention_mask is None:
        return
    m = attention_mask.bool()
    if (m[:, 1:] & ~m[:, :-1]).any():
        raise DataError(
            "RWKV is a recurrent model: a training batch must be right-padded (attention_mask 1...1 0...0 "
            "per row; the padded positions are then harmless). Left-padded prompts belong in model.generate, "
            "which handles them per row."
        )


class RWKVForCausalLM(nn.Module):
    """emb -> blocks -> ln_out -> head, with recurrent state, loss, checkpointing and generate."""

    def __init__(self, config: RWKVConfig):
        super().__init__()
        self.config = config
        self.emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(BLOCKS[config.model_type](config, i) for i in range(config.n_layer))
        self.ln_out = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.gradient_checkpointing = False
        self._checkpoint_kwargs: dict = {}

    # --- transformers-style conveniences ------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.head.weight.dtype

    def get_input_embeddings(self) -> nn.Embedding:
        return self.emb

    def get_output_embeddings(self) -> nn.Linear:
        return self.head

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self.gradient_checkpointing

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        """Recompute each block in backward (torch.utils.checkpoint, non-reentrant)."""
        kwargs = dict(gradient_checkpointing_kwargs or {})
        if kwargs.pop("use_reentrant", False):
            raise ConfigError(
                "use_reentrant=True is not supported for RWKV: with a frozen base (Bone) the reentrant variant "
                "drops the adapter gradients. Leave it out (non-reentrant is used)."
            )
        self.gradient_checkpointing, self._checkpoint_kwargs = True, {"use_reentrant": False, **kwargs}

    def gradient_checkpointing_disable(self) -> None:
        self.gradient_checkpointing = False

    def enable_input_require_grads(self) -> None:
        """Make the embedding output require grad (what transformers does for reentrant checkpointing)."""
        self.emb.register_forward_hook(lambda _m, _i, out: out.requires_grad_(True))

    # --- forward ------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: Tensor,
        labels: Tensor | None = None,
        attention_mask: Tensor | None = None,
        state: list | None = None,
        logits_to_keep: Tensor | int = 0,
    ) -> RWKVCausalLMOutput:
        """input_ids (B, T) -> logits (B, T, vocab); `state` (from a previous call) continues a sequence."""
        if input_ids.dim() != 2 or input_ids.shape[1] == 0:
            raise UsageError(f"input_ids must be (batch, tokens) with at least one token, got {tuple(input_ids.shape)}")
        _check_mask(attention_mask)
        x = self.emb(input_ids)
        v_first, new_state = None, []
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            layer_state = None if state is None else state[i]
            if recompute:
                x, v_first, layer_state = checkpoint(block, x, v_first, layer_state, **self._checkpoint_kwargs)
            else:
                x, v_first, layer_state = block(x, v_first, layer_state)
            new_state.append(layer_state)
        if isinstance(logits_to_keep, Tensor):
            if logits_to_keep.dtype != torch.bool or logits_to_keep.shape != input_ids.shape:
                raise UsageError(f"logits_to_keep must be a bool mask shaped like input_ids {tuple(input_ids.shape)}")
            if labels is not None:
                raise UsageError("logits_to_keep with labels: score the kept logits with bone.loss.next_token_loss(scored=True)")
            x = x[logits_to_keep]
        elif logits_to_keep:
            raise UsageError("logits_to_keep takes a bool mask (or 0 for every position)")
        logits = self.head(self.ln_out(x))
        loss = next_token_loss(logits, labels) if labels is not None else None
        return RWKVCausalLMOutput(loss=loss, logits=logits, state=new_state)

    @torch.no_grad()
    def generate(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        max_new_tokens: int = 20,
        do_sample: bool = False,
        eos_token_id: int | list[int] | None = None,
        pad_token_id: int | None = None,
    ) -> Tensor:
        """Greedy decoding with the recurrent state; (B, T + new) like transformers' generate.

        Each row's prompt is its attention_mask==1 tokens (left or right padding both work); rows
        that produced eos are filled with pad_token_id; stops early when every row is done."""
        if do_sample:
            raise ConfigError("RWKVForCausalLM.generate is greedy only; call it with do_sample=False")
        return greedy_generate(self, input_ids, attention_mask, max_new_tokens, eos_token_id, pad_token_id)
