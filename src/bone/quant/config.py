"""QuantConfig: how a base model is quantized on load (bitsandbytes 4-bit nf4/fp4 or 8-bit int8).

`parse(quantize, compute_dtype)` turns the user's value (a method name or a QuantConfig) into a
validated QuantConfig, so `bone.load_model(path, quantize="nf4")` and a training config's
`model.quantize: nf4` share one check and one error message. Importing it does not import torch
(the training config validates with it while `bone train --help` stays fast).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    import torch

METHODS = {"nf4": "4-bit NormalFloat (QLoRA's default)", "fp4": "4-bit float", "int8": "8-bit LLM.int8"}
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")  # names of torch dtypes
BLOCKSIZE = 64  # bitsandbytes' 4-bit block: 64 weights share one scale


@dataclass(frozen=True)
class QuantConfig:
    method: str  # "nf4" or "fp4" (bitsandbytes Linear4bit) or "int8" (Linear8bitLt)
    compute_dtype: str = "float32"  # dtype the quantized layers compute in (their dequantized rows and base product)
    double_quant: bool = True  # 4-bit only: quantize the per-block scales too (bitsandbytes compress_statistics)
    int8_threshold: float = 6.0  # int8 only: LLM.int8 outlier threshold on activations (bitsandbytes' default; 0 = none)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"quantize={self.method!r} is not a quantization bone knows; choose one of "
                              f"{sorted(METHODS)} ({', '.join(f'{k}: {v}' for k, v in METHODS.items())})")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ConfigError(f"compute_dtype={self.compute_dtype!r}; use one of {sorted(COMPUTE_DTYPES)}")
        if not isinstance(self.double_quant, bool):
            raise ConfigError(f"double_quant must be true or false, got {self.double_quant!r}")
        if not isinstance(self.int8_threshold, (int, float)) or self.int8_threshold < 0:
            raise ConfigError(f"int8_threshold must be a number >= 0, got {self.int8_threshold!r}")

    @property
    def bits(self) -> int:
        return 8 if self.method == "int8" else 4

    @property
    def torch_compute_dtype(self) -> "torch.dtype":
        import torch

        return getattr(torch, self.compute_dtype)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hf_config(self, skip: list[str]):
        """transformers' BitsAndBytesConfig for this config; `skip` are module-name patterns kept in full precision."""
        from transformers import BitsAndBytesConfig

        if self.bits == 8:
            return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=float(self.int8_threshold),
                                      llm_int8_skip_modules=skip)
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=self.method,
                                  bnb_4bit_use_double_quant=self.double_quant,
                                  bnb_4bit_compute_dtype=self.torch_compute_dtype, llm_int8_skip_modules=skip)


def _dtype_name(dtype) -> str:
    """'bfloat16' for torch.bfloat16 or 'bfloat16' (QuantConfig checks that the name is known)."""
    return dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")


def parse(quantize: str | QuantConfig | None, compute_dtype: "torch.dtype | str | None" = None) -> QuantConfig | None:
    """A validated QuantConfig from a method name (or a QuantConfig), or None for no quantization."""
    if quantize is None:
        if compute_dtype is not None:
            raise ConfigError("compute_dtype applies to quantized loading only; pass quantize='nf4', 'fp4' or 'int8' too")
        return None
    if isinstance(quantize, QuantConfig):
        if compute_dtype is not None:
            return dataclasses.replace(quantize, compute_dtype=_dtype_name(compute_dtype))
        return quantize
    if not isinstance(quantize, str):
        raise ConfigError(f"quantize must be one of {sorted(METHODS)} or None, got {quantize!r}")
    kw = {} if compute_dtype is None else {"compute_dtype": _dtype_name(compute_dtype)}
    return QuantConfig(quantize, **kw)
