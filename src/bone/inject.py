"""Finding target layers and swapping them for BoneLinear (`apply`), and back (`unload`).

Target forms (as PEFT): a list of names matches a module whose name equals an entry or ends with
"." + entry; a string is a regex that must match the whole module name; "all-linear" is every
Linear/Conv1D except output heads; None is the default for the model's architecture.
`apply` validates everything before it touches the model, so an error leaves it unchanged.
"""
from __future__ import annotations

import re
import warnings
from typing import Iterator

from torch import nn

from . import bases, variants
from . import parts as trained_parts
from .bases import is_adaptable, kind_of, shape_of
from .config import BoneConfig
from .errors import ModelError, UsageError
from .layer import DEFAULT, BoneLinear

_LLAMA_LIKE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# every projection RWKV-PEFT builds through its linear factory; never RWKV-7's w1/w2, a1/a2, ... (x070 has no ffn.receptance)
_RWKV7 = r".*\.(att\.(receptance|key|value|output)|ffn\.(key|value))"
DEFAULT_TARGETS: dict[str, list[str] | str] = {
    **{t: _LLAMA_LIKE for t in ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text")},
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "rwkv6": r".*\.(att\.(receptance|key|value|output|gate)|ffn\.(key|receptance|value))",
    "rwkv7": _RWKV7,
}
_HEAD_NAMES = ("lm_head", "head", "embed_out", "output_layer")


def bone_layers(model: nn.Module) -> Iterator[tuple[str, BoneLinear]]:
    """(name, layer) for every Bone-adapted layer, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, BoneLinear):
            yield name, module


def _model_type(model: nn.Module) -> str | None:
    return getattr(getattr(model, "config", None), "model_type", None)


def _matches(name: str, spec: list[str] | str) -> bool:
    if isinstance(spec, str):
        return re.fullmatch(spec, name) is not None
    return any(name == key or name.endswith("." + key) for key in spec)


def is_head(model: nn.Module, name: str, module: nn.Module) -> bool:
    get_out = getattr(model, "get_output_embeddings", None)
    out_emb = get_out() if callable(get_out) else None
    return module is out_emb or name.split(".")[-1] in _HEAD_NAMES


def _linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if is_adaptable(m)]


def _summarise(names: list[str], limit: int = 12) -> str:
    """Unique last components, so a 30-layer model lists 7 names rather than 210."""
    leaves = sorted({n.split(".")[-1] for n in names})
    text = ", ".join(leaves[:limit]) + (" ..." if len(leaves) > limit else "")
    return f"{text} ({len(names)} linear modules, e.g. {names[0] if names else 'none'})"


def default_target_names(model: nn.Module) -> list[str]:
    """Names of the adaptable modules the model's architecture targets by default (DEFAULT_TARGETS)."""
    spec = DEFAULT_TARGETS.get(_model_type(model))
    if spec is None:
        return []
    return [n for n, m in model.named_modules() if n and is_adaptable(m) and _matches(n, spec)]


def resolve_targets(model: nn.Module, cfg: BoneConfig) -> list[str]:
    """Names of the modules `cfg` adapts. Raises ModelError with the available linear names."""
    spec = cfg.target_modules
    if spec is None:
        mtype = _model_type(model)
        if mtype not in DEFAULT_TARGETS:
            raise ModelError(
                f"no default target_modules for model type {mtype!r}; pass target_modules=[...] or 'all-linear'. "
                f"Available: {_summarise(_linear_names(model))}"
            )
        spec = DEFAULT_TARGETS[mtype]
    names, not_linear = [], []
    for name, module in model.named_modules():
        if not name:
            continue
        if spec == "all-linear":
            hit = is_adaptable(module) and not is_head(model, name, module)
        else:
            hit = _matches(name, spec)
        if not hit or (cfg.exclude_modules is not None and _matches(name, cfg.exclude_modules)):
            continue
        if is_adaptable(module):
            names.append(name)
        else:
            not_linear.append(f"{name} ({type(module).__name__})")
    if not_linear:
        raise ModelError(
            f"target_modules={spec!r} matches module(s) of a type bone cannot adapt: {not_linear[:5]}; bone adapts "
            f"nn.Linear, transformers Conv1D and bitsandbytes Linear4bit / Linear8bitLt layers. "
            f"Available: {_summarise(_linear_names(model))}"
        )
    if not names:
        raise ModelError(f"target_modules={spec!r} matches no module. Available: {_summarise(_linear_names(model))}")
    return names


def check_shapes(model: nn.Module, names: list[str], cfg: BoneConfig) -> None:
    """One ModelError listing every target the variant (or bone) cannot adapt, with a value that works."""
    variant = variants.get(cfg.variant)
    modules = dict(model.named_modules())
    unusable = [f"  {n} ({type(modules[n]).__name__}): {why}" for n in names
                if (why := kind_of(modules[n]).problem(modules[n])) is not None]
    if unusable:
        raise ModelError(f"bone cannot adapt {len(unusable)} layer(s):\n" + "\n".join(unusable))
    problems = []
    for name in names:
        out, in_ = shape_of(modules[name])
        why = variant.check(out, in_, cfg.r, cfg.mini_r)
        if why is not None:
            problems.append(f"  {name} (out={out}, in={in_}): {why}; {variant.hint(out, in_, cfg.r, cfg.mini_r)}")
    if problems:
        raise ModelError(
            f"variant {cfg.variant!r} with r={cfg.r} cannot adapt {len(problems)} layer(s):\n" + "\n".join(problems)
            + "\nChange r (or mini_r), or leave these layers out with exclude_modules."
        )


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def require_unadapted(model: nn.Module) -> None:
    """Refuse a model that already carries Bone adapters, saying what is there and what to do."""
    layers = list(bone_layers(model))
    if layers:
        cfg = layers[0][1].adapter().cfg
        raise UsageError(
            f"the model already has a Bone adapter (variant {cfg.variant!r}, r={cfg.r}) on {len(layers)} layer(s), "
            f"e.g. {layers[0][0]}: call bone.unload(model) first (after bone.merge(model) to keep it folded in), "
            f"or start from a fresh base model")


def _warn_notes(notes: list[tuple[str, str]]) -> None:
    """One warning naming every layer whose `prepare` had something to say."""
    if notes:
        text = "; ".join(f"{name}: {note}" for name, note in notes[:6]) + (f"; ... ({len(notes)} layers)" if len(notes) > 6 else "")
        warnings.warn(text, stacklevel=3)


def apply(model: nn.Module, cfg: BoneConfig, *, modules: list[str] | None = None,
          parts: list[str] | None = None) -> nn.Module:
    """Inject Bone adapters in place; every other parameter is frozen but the trained parts
    (cfg.train_parts, see bone.parts). Returns `model`.

    modules: adapt exactly these module names instead of resolving cfg.target_modules.
    parts: train exactly these parameter names instead of resolving cfg.train_parts.
    Every layer of a known kind in the model is `prepare`d (bitsandbytes 4-bit layers: no CPU repacking)."""
    require_unadapted(model)
    names = resolve_targets(model, cfg) if modules is None else list(modules)
    check_shapes(model, names, cfg)
    chosen = trained_parts.resolve(model, cfg.train_parts, names) if parts is None else trained_parts.check(model, parts, names)
    model.requires_grad_(False)
    _warn_notes(bases.prepare(model, set(names)))
    for name in names:
        layer = BoneLinear(model.get_submodule(name))
        layer.add_adapter(DEFAULT, cfg)
        _set_module(model, name, layer)
    trained_parts.attach(model, chosen)
    return model


def unload(model: nn.Module) -> nn.Module:
    """Replace every BoneLinear with its plain layer, keeping the current (merged or base) weights;
    trained parts keep their trained values when every layer is merged, else get their originals back."""
    layers = list(bone_layers(model))
    trained_parts.release(model, keep=bool(layers) and all(layer.merged for _, layer in layers))
    for name, layer in layers:
        _set_module(model, name, layer.to_base())
    return model


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """What an optimizer should update: the active adapters' blocks, in module order, then the trained parts."""
    return [layer.bone_block for _, layer in bone_layers(model)] + trained_parts.parameters(model)


def adapter_config(model: nn.Module, name: str = DEFAULT) -> BoneConfig:
    """The BoneConfig adapter `name` was applied or loaded with."""
    for _, layer in bone_layers(model):
        if name in layer.bone_adapters:
            return layer.bone_adapters[name].cfg
    raise ModelError(f"the model has no Bone adapter named {name!r}: call bone.apply(model, cfg) or bone.load(model, dir) first")
