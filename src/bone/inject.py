"""Finding target layers and swapping them for BoneLinear (`apply`), and back (`unload`).

Target forms (as PEFT): a list of names matches a module whose name equals an entry or ends with
"." + entry; a string is a regex that must match the whole module name; "all-linear" is every
Linear/Conv1D except output heads; None is the default for the model's architecture.
An already adapted layer (a BoneLinear) is a target like its base: `apply(..., name=...)` adds
the new adapter next to the ones it holds (see `bone.adapters` for names).
`apply` validates everything before it touches the model, so an error leaves it unchanged.
"""
from __future__ import annotations

import re
import warnings

from torch import nn

from . import bases, variants
from . import parts as trained_parts
from .adapters import activate, adapter_names, bone_layers, check_name, layers_with, merged_adapter, resolve
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


def _modules(model: nn.Module):
    """(name, module) of the model's modules, leaving out what BoneLinear layers hold (their adapters)."""
    inside = None  # the name prefix of the BoneLinear whose children are being skipped
    for name, module in model.named_modules():
        if inside is not None and name.startswith(inside):
            continue
        if isinstance(module, BoneLinear):
            inside = name + "."
        yield name, module


def adaptable(module: nn.Module) -> bool:
    """Whether `module` can take an adapter: a layer of a known kind, or a BoneLinear (another one)."""
    return isinstance(module, BoneLinear) or is_adaptable(module)


def target_shape(module: nn.Module) -> tuple[int, int]:
    """(out_features, in_features) of an adaptable module."""
    return (module.out_features, module.in_features) if isinstance(module, BoneLinear) else shape_of(module)


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
    return [n for n, m in _modules(model) if adaptable(m)]


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
    return [n for n, m in _modules(model) if n and adaptable(m) and _matches(n, spec)]


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
    for name, module in _modules(model):
        if not name:
            continue
        if spec == "all-linear":
            hit = adaptable(module) and not is_head(model, name, module)
        else:
            hit = _matches(name, spec)
        if not hit or (cfg.exclude_modules is not None and _matches(name, cfg.exclude_modules)):
            continue
        if adaptable(module):
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


def _grouped(problems: list[tuple[str, str]]) -> str:
    """(layer name, what is wrong with it) pairs as one line: layers with the same problem named once,
    by their distinct last name parts (what exclude_modules takes), their count and the first one."""
    groups: dict[str, list[str]] = {}
    for name, why in problems:
        groups.setdefault(why, []).append(name)
    return "; ".join(f"{names[0]} {why}" if len(names) == 1 else
                     f"{', '.join(dict.fromkeys(n.rpartition('.')[2] for n in names))} ({len(names)} layers, e.g. "
                     f"{names[0]}) {why}" for why, names in groups.items())


def check_shapes(model: nn.Module, names: list[str], cfg: BoneConfig) -> None:
    """One ModelError (one line) naming every target the variant (or bone) cannot adapt, grouped by
    shape, with a value that works."""
    variant = variants.get(cfg.variant)
    modules = dict(model.named_modules())
    unusable = [(n, f"({type(modules[n]).__name__}): {why}") for n in names if not isinstance(modules[n], BoneLinear)
                and (why := kind_of(modules[n]).problem(modules[n])) is not None]
    if unusable:
        raise ModelError(f"bone cannot adapt {len(unusable)} layer(s): {_grouped(unusable)}")
    problems = []
    for name in names:
        out, in_ = target_shape(modules[name])
        why = variant.check(out, in_, cfg.r, cfg.mini_r)
        if why is not None:
            problems.append((name, f"(out={out}, in={in_}): {why}, {variant.hint(out, in_, cfg.r, cfg.mini_r)}"))
    if problems:
        raise ModelError(
            f"variant {cfg.variant!r} with r={cfg.r} cannot adapt {len(problems)} layer(s): {_grouped(problems)}. "
            "Change r (or mini_r), or leave these layers out with exclude_modules."
        )


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def require_unadapted(model: nn.Module, name: str | None = None) -> None:
    """Refuse to add adapter `name` (None: the single-adapter API's "default") when the model cannot
    take it: it has adapters and no name was given, the name is taken, or an adapter is merged."""
    if name is not None:
        check_name(name)
    names = adapter_names(model)
    if not names:
        return
    if name is None:
        layers = list(bone_layers(model))
        cfg = next(iter(layers[0][1].bone_adapters.values())).cfg
        what = (f"a Bone adapter (variant {cfg.variant!r}, r={cfg.r})" if len(names) == 1
                else f"Bone adapters {', '.join(map(repr, names))}")
        raise UsageError(
            f"the model already has {what} on {len(layers)} layer(s), e.g. {layers[0][0]}: to add another next to it, "
            f"give it a name (bone.apply(model, cfg, name=...) / bone.load(model, dir, name=...)); to replace it, call "
            f"bone.unload(model) first (after bone.merge(model) to keep it folded in), or start from a fresh base model")
    if name in names:
        raise UsageError(f"the model already has an adapter named {name!r}: pick another name, or call "
                         f"bone.delete_adapter(model, {name!r}) first")
    merged = merged_adapter(model)
    if merged is not None:
        raise UsageError(f"adapter {merged!r} is merged into the weights: call bone.unmerge(model) before adding "
                         f"{name!r} (or bone.unload(model, {merged!r}) to keep it folded in for good)")


def _warn_notes(notes: list[tuple[str, str]]) -> None:
    """One warning naming every layer whose `prepare` had something to say."""
    if notes:
        text = "; ".join(f"{name}: {note}" for name, note in notes[:6]) + (f"; ... ({len(notes)} layers)" if len(notes) > 6 else "")
        warnings.warn(text, stacklevel=3)


def apply(model: nn.Module, cfg: BoneConfig, *, modules: list[str] | None = None,
          parts: list[str] | None = None, name: str | None = None) -> nn.Module:
    """Inject Bone adapters in place; every other parameter is frozen but the trained parts
    (cfg.train_parts, see bone.parts). Returns `model`.

    modules: adapt exactly these module names instead of resolving cfg.target_modules.
    parts: train exactly these parameter names instead of resolving cfg.train_parts.
    name: add the adapter under this name next to the model's others; it becomes the active one
    (`bone.adapters`). None: the single-adapter API, the adapter "default" on a model without adapters.
    Trained parts belong to the model, not to one adapter: they go with a single adapter only.
    Every layer of a known kind in the model is `prepare`d (bitsandbytes 4-bit layers: no CPU repacking)."""
    require_unadapted(model, name)
    names = resolve_targets(model, cfg) if modules is None else list(modules)
    check_shapes(model, names, cfg)
    chosen = trained_parts.resolve(model, cfg.train_parts, names) if parts is None else trained_parts.check(model, parts, names)
    _require_no_parts(model, chosen, name)
    model.requires_grad_(False)
    _warn_notes(bases.prepare(model, set(names)))
    name = name or DEFAULT
    for target in names:
        module = model.get_submodule(target)
        layer = module if isinstance(module, BoneLinear) else BoneLinear(module)
        layer.add_adapter(name, cfg)
        _set_module(model, target, layer)
    trained_parts.attach(model, chosen)
    activate(model, name)
    return model


def _require_no_parts(model: nn.Module, chosen: list[str], name: str | None) -> None:
    """Trained parts are base parameters, shared by every adapter of the model: refuse to mix them
    with named adapters (a second adapter would train or overwrite the first one's parts)."""
    if not adapter_names(model):
        return
    if chosen:
        raise UsageError(f"train_parts ({len(chosen)} parameter(s), e.g. {chosen[0]}) go with a single adapter: "
                         f"the model already has adapters {adapter_names(model)}; load or apply this one on a fresh base model "
                         f"(bone generate / chat: give it as the only --adapter)")
    if trained_parts.names(model):
        raise UsageError(f"the model's adapter trains base parameters (train_parts, e.g. {trained_parts.names(model)[0]}), "
                         f"which a second adapter {name!r} would share: use a fresh base model for it, or "
                         f"bone.merge(model) and bone.unload(model) to fold the first one in (bone generate / chat: "
                         f"give it as the only --adapter)")


def _drop(model: nn.Module, name: str, keep_parts: bool) -> None:
    """Remove adapter `name` from every layer; a layer left without adapters becomes its plain base.
    When no adapter is left, the trained parts are released (`keep_parts`: with their trained values)."""
    for target, layer in layers_with(model, name):
        layer.remove_adapter(name)
        if not layer.bone_adapters:
            _set_module(model, target, layer.to_base())
    if next(bone_layers(model), None) is None:
        trained_parts.release(model, keep=keep_parts)


def unload(model: nn.Module, name: str | None = None) -> nn.Module:
    """Drop adapters, keeping the current weights (merged or base). None: every adapter (each
    BoneLinear becomes its plain layer again); a name: only that adapter (merged, it stays folded
    into the weights for good; layers left without adapters become plain). Trained parts (only
    with a single adapter) keep their trained values when it is merged, else get their originals back."""
    if name is not None:
        resolve(model, name)
        _drop(model, name, keep_parts=merged_adapter(model) == name)
        return model
    layers = list(bone_layers(model))
    trained_parts.release(model, keep=bool(layers) and all(layer.merged for _, layer in layers))
    for target, layer in layers:
        _set_module(model, target, layer.to_base())
    return model


def delete_adapter(model: nn.Module, name: str) -> nn.Module:
    """Remove adapter `name` (refused while it is merged). Deleting the active adapter leaves no
    adapter active: the model runs its base until `bone.use(model, other)`. Deleting the only
    adapter gives trained parts their original values back."""
    resolve(model, name)
    if merged_adapter(model) == name:
        raise UsageError(f"adapter {name!r} is merged into the weights: call bone.unmerge(model) first, or "
                         f"bone.unload(model, {name!r}) to keep it folded in")
    _drop(model, name, keep_parts=False)
    return model


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """What an optimizer should update: the active adapter's blocks, in module order, then the trained parts."""
    return [layer.bone_block for _, layer in bone_layers(model) if layer.active is not None] + trained_parts.parameters(model)


def adapter_config(model: nn.Module, name: str | None = None) -> BoneConfig:
    """The BoneConfig adapter `name` (default: the active one) was applied or loaded with."""
    name = resolve(model, name)
    return layers_with(model, name)[0][1].bone_adapters[name].cfg
