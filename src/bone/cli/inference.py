"""What `bone generate` and `bone chat` share: the options for the model, its adapters, the prompt
template and decoding; naming the adapters (`--adapter [NAME=]DIR`); loading the model with every
adapter side by side (named adapters, `bone.adapters`); and the prompt format each one is run with.

An adapter is named after its folder (bone train's `<run>/adapter` after the run folder), or as
given with NAME=DIR. `base` names the model without adapter. Templates: `training` runs each
adapter with the template it was trained with (recorded in its bone train run's config.yaml;
alpaca, bone train's default, when nothing is recorded) and the model without adapter with its
chat template; `chat` and `alpaca` choose one for all. A tokenizer without a chat template gets
the alpaca template, with a note.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

BASE = "base"  # the model without adapter, in /adapter and in a prompt file's "adapter" field
TEMPLATES = ("training", "chat", "alpaca")
DTYPES = ("float32", "bfloat16", "float16")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """--model, --adapter, --template, --system, --tokenizer, --dtype, --device and the decoding options."""
    from ..generation.config import GenerationConfig
    from ..options import field_comments

    p.add_argument("--model", required=True, help="HF model folder, RWKV .pth, or smollm2-135m (the embedded SmolLM2)")
    p.add_argument("--adapter", action="append", default=[], metavar="[NAME=]DIR",
                   help="an adapter folder to load (repeat for several, side by side); named after its folder "
                        "(bone train's <run>/adapter: after <run>) unless given as NAME=DIR; the first one is active")
    p.add_argument("--template", choices=TEMPLATES, default="training",
                   help="training (default): each adapter's own training template (alpaca when not recorded), "
                        "the model's chat template without adapter; chat or alpaca: that one for all")
    p.add_argument("--system", help="a system message opening each conversation (chat templates only)")
    p.add_argument("--tokenizer", help="tokenizer folder (default: the model's)")
    p.add_argument("--dtype", choices=DTYPES, help="load the model in this dtype (default: its own; fp32 for RWKV)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default auto: cuda when available)")
    g = p.add_argument_group("decoding")
    comments = field_comments(GenerationConfig)
    for f in dataclasses.fields(GenerationConfig):
        kind = {"max_new_tokens": int, "top_k": int, "seed": int}.get(f.name, float)
        g.add_argument("--" + f.name.replace("_", "-"), type=kind, default=f.default,
                       help=f"{comments[f.name]} (default: {f.default})")


def generation_config(args: argparse.Namespace):
    """The GenerationConfig of the decoding options (ConfigError on a bad value)."""
    from ..generation.config import GenerationConfig

    return GenerationConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(GenerationConfig)})


@dataclass
class AdapterSpec:
    name: str
    path: Path


def _split(value: str) -> tuple[str | None, Path]:
    """`NAME=DIR` -> (NAME, DIR); a plain DIR (even one holding '=') -> (None, DIR)."""
    name, eq, rest = value.partition("=")
    if eq and name and "/" not in name and not Path(value).exists():
        return name, Path(rest)
    return None, Path(value)


def folder_name(path: Path) -> str:
    """The name an adapter gets: its folder's name, its run's for bone train's `<run>/adapter`, or a
    file's stem (an RWKV-PEFT `rwkv-0.pth` is "rwkv-0")."""
    path = path.resolve()
    if path.is_file():
        return path.stem
    return path.parent.name if path.name == "adapter" and path.parent.name else path.name


def adapter_specs(values: list[str]) -> list[AdapterSpec]:
    """The --adapter values as named adapters (folders, or RWKV-PEFT `.pth` files), checked (names usable
    and distinct, readable Bone adapters) before any model is loaded."""
    from ..adapters import check_name
    from ..errors import ConfigError
    from ..io import read

    specs: list[AdapterSpec] = []
    for value in values:
        name, path = _split(value)
        if name is not None:
            check_name(name)
        else:
            name = folder_name(path)
            try:
                check_name(name)
            except ConfigError as err:
                raise ConfigError(f"{err}; --adapter {value} is named after its folder: name it with "
                                  f"--adapter NAME={value}") from None
        if name == BASE:
            raise ConfigError(f"the adapter name {BASE!r} stands for the model without adapter: name {path} "
                              f"otherwise with --adapter NAME={path}")
        twin = next((s for s in specs if s.name == name), None)
        if twin is not None:
            raise ConfigError(f"two adapters are named {name!r} ({twin.path} and {path}): name them with "
                              f"--adapter NAME=DIR")
        read(path)  # refuses a missing, foreign or corrupt adapter now, in one line
        specs.append(AdapterSpec(name, path))
    return specs


def listing(specs: list[AdapterSpec]) -> str:
    """The names /adapter and a prompt file's "adapter" field accept, for messages."""
    loaded = ", ".join(repr(s.name) for s in specs) or "none"
    return f"{loaded} (or {BASE!r}: the model without adapter)"


def _template(choice: str, spec: AdapterSpec | None) -> str:
    if choice != "training":
        return choice
    if spec is None:
        return "chat"
    from ..generation.formats import trained_template

    return trained_template(spec.path) or "alpaca"


def device(name: str):
    """The torch device --device names ("auto": cuda when available), checked before anything loads."""
    import torch

    from ..errors import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r} is not a device: use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available here; use --device cpu")
    return dev


class Loaded:
    """The model with its adapters side by side, its tokenizer and each adapter's prompt format."""

    def __init__(self, args: argparse.Namespace, specs: list[AdapterSpec]):
        import torch

        from .. import adapters, io
        from ..generation.formats import prompt_format
        from ..models import load_model, load_tokenizer

        where = device(args.device)
        self.specs = specs
        self._noted: set[str] = set()
        self.system = args.system
        self.tokenizer = load_tokenizer(args.tokenizer or args.model)
        self.formats = {s.name: prompt_format(self.tokenizer, _template(args.template, s)) for s in specs}
        self.formats[BASE] = prompt_format(self.tokenizer, _template(args.template, None))
        model = load_model(args.model, getattr(torch, args.dtype) if args.dtype else None)
        for spec in specs:
            io.load(model, spec.path, name=spec.name)
        if specs:
            adapters.use(model, specs[0].name)
        self.model = model.to(where).eval()

    @property
    def first(self) -> str:
        """The name the model starts with: the first adapter, or BASE."""
        return self.specs[0].name if self.specs else BASE

    def check(self, name: str) -> None:
        """Raise AdapterError unless `name` is a loaded adapter or BASE."""
        from ..errors import AdapterError

        if name != BASE and name not in [s.name for s in self.specs]:
            raise AdapterError(f"no adapter named {name!r}; loaded: {listing(self.specs)}")

    def switch(self, name: str) -> None:
        """Run adapter `name` (BASE: none) from now on."""
        from .. import adapters

        self.check(name)
        if self.specs:
            adapters.use(self.model, None if name == BASE else name)

    def format(self, name: str):
        """The prompt format adapter `name` runs with; the first use of a format with a note (a missing
        chat template; --system given to the alpaca template, which leaves it out) prints the note."""
        from ..generation.formats import AlpacaFormat

        fmt = self.formats[name]
        notes = [fmt.note] if fmt.note else []
        if self.system and isinstance(fmt, AlpacaFormat):
            notes.append("--system is not used: the alpaca template has no system message (as in training)")
        for note in notes:
            if note not in self._noted:
                self._noted.add(note)
                print(f"note: {note}", file=sys.stderr, flush=True)
        return fmt
