"""bone: Bone (Block-Affine / DiSHA / MiSS) parameter-efficient fine-tuning.

    cfg = bone.BoneConfig(r=64, variant="col", target_modules=["q_proj", "v_proj"])
    model = bone.apply(model, cfg)          # inject adapters in place, freeze the rest
    bone.save(model, "out/adapter")         # PEFT-layout adapter directory
    model = bone.load(base, "out/adapter")  # bone, PEFT MiSS or legacy PEFT Bone dirs, RWKV-PEFT .pth files
    bone.merge(model); bone.unmerge(model)  # in place, exact
    with bone.disabled(model): ...          # base-model behaviour
    bone.load(model, "out/other", name="b") # named adapters side by side: bone.use(model, "b"),
                                            # with bone.using(model, "b"): ..., bone.adapter_names(model)
    model = bone.load_model(path, quantize="nf4")  # QBone: a bitsandbytes 4/8-bit frozen base (bone.quant)
    bone.flash(peft_model)                  # PEFT MiSS layers run the Flash-Bone kernels (bone.unflash undoes)

The names below are imported on first use, so `import bone` (and the `bone` command's `--help`)
does not import torch.
"""
from . import lazy

from .errors import BoneError

_WHERE = {
    "active_adapter": "adapters", "adapter_names": "adapters", "use": "adapters", "using": "adapters",
    "BoneConfig": "config", "DEFAULT_TARGETS": "inject", "adapter_config": "inject", "apply": "inject",
    "bone_layers": "inject", "delete_adapter": "inject", "trainable_parameters": "inject", "unload": "inject",
    "adapter_state_dict": "io", "load": "io", "read": "io", "read_adapter": "io", "save": "io", "BoneAdapter": "layer",
    "BoneLinear": "layer",
    "disabled": "merging", "merge": "merging", "merge_state_dict": "merging", "merge_weight": "merging",
    "unmerge": "merging", "load_model": "models", "load_tokenizer": "models", "flash": "integrations",
    "unflash": "integrations",
}
__all__ = ["BoneError", *sorted(_WHERE)]
__version__ = "0.1.0"
__getattr__, __dir__ = lazy.names(__name__, _WHERE, globals())
