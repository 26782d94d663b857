"""The `rwkv-peft` target: an adapter as the `.pth` RWKV-PEFT saves (bone.rwkv_peft).

    bone export --to rwkv-peft --adapter runs/x/adapter --out rwkv-0.pth [--dtype bfloat16]

The file holds `<module>.disha` blocks and the trained parts under their own names, so RWKV-PEFT's
`merge/merge_disha.py --peft_checkpoint rwkv-0.pth` folds it into a base model and
`train.py --peft disha --disha_config '{"load": "rwkv-0.pth", ...}'` continues from it. Only shard
(RWKV-PEFT mode "bone") and row (mode "bat") adapters have that form (`Variant.rwkv_peft_mode`).
torch is imported when an export runs, so `bone export --help` starts fast.
"""
from __future__ import annotations

from ..errors import ConfigError
from .target import ExportTarget, check_paths

DTYPES = ("bfloat16", "float32", "float16")


class RWKVPeftTarget(ExportTarget):
    name = "rwkv-peft"
    about = "RWKV-PEFT's Bone/DiSHA checkpoint (.pth, '<module>.disha' blocks + trained parts); shard and row only"

    def add_arguments(self, parser):
        parser.add_argument("--dtype", default="bfloat16", choices=DTYPES,
                            help="dtype of every tensor written (default bfloat16, what RWKV-PEFT's bf16 runs save: "
                                 "its merge script needs row blocks in the base model's dtype)")

    def check(self, cfg):
        from .. import variants
        from ..rwkv_peft import no_form

        return no_form(cfg) if variants.get(cfg.variant).rwkv_peft_mode is None else None

    def export(self, adapter, out, *, base, options, overwrite, log):
        import torch

        from ..io import read
        from ..models.rwkv.checkpoint import atomic_save
        from ..rwkv_peft import RWKV_MODULE, state_dict

        if base is not None:
            raise ConfigError("--to rwkv-peft writes the adapter alone: leave out --base (RWKV-PEFT's merge script "
                              "or `bone merge` combines it with the base model)")
        if out.suffix != ".pth":
            raise ConfigError(f"--out {out}: an RWKV-PEFT checkpoint is a .pth file")
        check_paths([adapter], out, overwrite)
        cfg, blocks, _, parts = read(adapter)
        why = self.check(cfg)
        if why is not None:
            raise ConfigError(why)
        foreign = sorted(m for m in blocks if not RWKV_MODULE.fullmatch(m))
        if foreign:  # a Llama / GPT-2 adapter: RWKV-PEFT's tools would find none of its layers
            raise ConfigError(f"the adapter's layers are not an RWKV model's ({len(foreign)}, e.g. {foreign[0]}; RWKV "
                              f"projections are blocks.N.att|ffn.NAME): RWKV-PEFT checkpoints are for RWKV models; "
                              f"use --to lora or bone merge for this one")
        sd = state_dict(cfg, blocks, parts, getattr(torch, options.dtype))
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_save(sd, out)
        log(f"wrote {out}: {len(blocks)} '.disha' block(s) (RWKV-PEFT mode {self._mode(cfg)!r}, r={cfg.r}) and "
            f"{len(parts)} trained part(s), {options.dtype}")
        return out

    @staticmethod
    def _mode(cfg) -> str:
        from .. import variants

        return variants.get(cfg.variant).rwkv_peft_mode
