"""Quantized bases (QBone): fine-tune Bone adapters on a bitsandbytes 4-bit or 8-bit frozen base.

    model = bone.load_model(path, quantize="nf4")         # HF folder or RWKV .pth, quantized on load
    bone.apply(model, bone.BoneConfig(r=64))               # adapts Linear4bit / Linear8bitLt like Linear
    bone.save(model, "adapter")                            # an ordinary adapter (loads on any base)
    bone.quant.dequantize(model); bone.merge(model)        # merge into the dequantized weights

bitsandbytes is imported on demand (`bnb.require`); `import bone` never imports it. The parts:
`config` (QuantConfig, `parse`), `kinds` (the layer kinds), `rows` (dequantizing row chunks for
the Flash-Bone kernels), `packing` (bitsandbytes' CPU inference layout), `convert` (quantize
nn.Linear layers, dequantize a model, find quantized layers).
"""
from .. import lazy

_WHERE = {
    "METHODS": "config", "QuantConfig": "config", "parse": "config",
    "dequantize": "convert", "is_quantized": "convert",
    "quantize_linears": "convert", "quantized_layers": "convert", "full_precision_modules": "convert",
}
__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy.names(__name__, _WHERE, globals())
