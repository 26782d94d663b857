"""`bone bench --quant nf4|fp4|int8`: the benchmark's base with its seven projections quantized by
bitsandbytes (bone's own path, `bone.quant.quantize_linears`: Linear4bit with double quantization,
or Linear8bitLt), and what the quantized weights occupy.

  state_tensors(w)    the quantization state beside a weight (4-bit absmax / code / nested
                      statistics, 8-bit row scales): it exists whether or not a backward follows,
                      so `measure.kept_bytes` leaves it out like the parameters
  weight_bytes(model) bytes of the quantized layers' weights (codes + state) next to the same
                      weights in bf16 (2 bytes a value)

The 4-bit CPU kernels need in_features divisible by the blocksize (64): `check` refuses other
shapes before anything is built.
"""
from __future__ import annotations

from ..errors import ConfigError
from .config import BenchConfig

BLOCKSIZE = 64  # bitsandbytes' 4-bit block (bone.quant.config.BLOCKSIZE)


def check(cfg: BenchConfig, method: str) -> None:
    """ConfigError unless every projection's in_features suits `method`; MissingDependencyError
    (with the install command) without bitsandbytes."""
    from ..quant.bnb import require
    from ..quant.config import QuantConfig

    bits = QuantConfig(method).bits
    if bits == 4 and (cfg.hidden % BLOCKSIZE or cfg.intermediate % BLOCKSIZE):
        raise ConfigError(f"--quant {method}: hidden ({cfg.hidden}) and intermediate ({cfg.intermediate}) must be multiples "
                          f"of {BLOCKSIZE} (bitsandbytes' 4-bit CPU kernels read other widths wrongly)")
    require()


def quantize(model, method: str, targets: list[str]):
    """`model` with every `targets` projection quantized with `method`, in place."""
    from ..quant.config import QuantConfig
    from ..quant.convert import quantize_linears

    names = [n for n, _ in model.named_modules() if n.rpartition(".")[2] in targets]
    quantize_linears(model, names, QuantConfig(method))
    return model


def state_tensors(weight) -> list:
    """The tensors bitsandbytes keeps beside a quantized weight (its quantization state)."""
    import torch

    found = [v for v in vars(weight).values() if isinstance(v, torch.Tensor)]  # Int8Params: SCB (row scales)
    state = getattr(weight, "quant_state", None)
    while state is not None:  # QuantState: absmax, code, offset; state2 = the nested statistics
        found += [v for v in vars(state).values() if isinstance(v, torch.Tensor)]
        state = getattr(state, "state2", None)
    return found


def weight_bytes(model) -> dict:
    """{"quantized_bytes", "bf16_bytes", "ratio", "layers"} over the model's quantized layers."""
    from ..quant.convert import quantized_layers

    layers = quantized_layers(model)
    done, quantized, values = set(), 0, 0
    for _, layer in layers:
        w = layer.weight
        for t in (w, *state_tensors(w)):
            st = t.untyped_storage()
            if st.data_ptr() not in done:
                done.add(st.data_ptr())
                quantized += st.nbytes()
        values += layer.in_features * layer.out_features
    return {"quantized_bytes": quantized, "bf16_bytes": 2 * values, "ratio": quantized / (2 * values) if values else None,
            "layers": len(layers)}
