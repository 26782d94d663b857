"""bone: Bone (Block-Affine / DiSHA / MiSS) parameter-efficient fine-tuning.

    cfg = bone.BoneConfig(r=64, variant="col", target_modules=["q_proj", "v_proj"])
    model = bone.apply(model, cfg)          # inject adapters in place, freeze the rest
    bone.save(model, "out/adapter")         # PEFT-layout adapter directory
    model = bone.load(base, "out/adapter")  # bone, PEFT MiSS or legacy PEFT Bone dirs
    bone.merge(model); bone.unmerge(model)  # in place, exact
    with bone.disabled(model): ...          # base-model behaviour
    bone.flash(peft_model)                  # PEFT MiSS layers run the Flash-Bone kernels (bone.unflash undoes)
"""
from .config import BoneConfig
from .errors import BoneError
from .integrations import flash, unflash
from .inject import DEFAULT_TARGETS, adapter_config, apply, bone_layers, trainable_parameters, unload
from .io import adapter_state_dict, load, read_adapter, save
from .layer import BoneAdapter, BoneLinear
from .merging import disabled, merge, merge_state_dict, merge_weight, unmerge
from .models import load_model, load_tokenizer

__all__ = [
    "BoneAdapter", "BoneConfig", "BoneError", "BoneLinear", "DEFAULT_TARGETS", "adapter_config", "adapter_state_dict", "apply", "bone_layers", "disabled",
    "flash", "load", "load_model", "load_tokenizer", "merge", "merge_state_dict", "merge_weight", "read_adapter", "save",
    "trainable_parameters", "unflash", "unload", "unmerge",
]
__version__ = "0.1.0"
