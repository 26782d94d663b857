"""Method: what `bone train` trains and how its result is saved and read back.

The training recipe, its checkpoints (gathered under FSDP2 / ZeRO), `bone eval --adapter`,
`bone merge` and `bone compare` only talk to this interface, so a new method (a Bone variant is
one method with a variant option; a baseline such as LoRA is another) is one class in one file of
this package plus one entry in `bone.methods.METHODS`.

Parameter names: `trainable` returns `(name, parameter)` pairs with the names
`model.named_parameters()` gives (minus activation-checkpointing wrappers); checkpoints key the
optimizer state and the gathered tensors by them, so they must be the same in every process.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor, nn

if TYPE_CHECKING:
    from ..train.config import TrainConfig

WRAPPER = "_checkpoint_wrapped_module."  # inserted into parameter names by activation checkpointing


def named_trainable(model: nn.Module, params: list[nn.Parameter]) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) for `params`, in `model.named_parameters()` order, wrapper names removed."""
    wanted = {id(p) for p in params}
    return [(n.replace(WRAPPER, ""), p) for n, p in model.named_parameters() if id(p) in wanted]


class Method:
    """Interface for one fine-tuning method."""

    name: str
    about: str  # one line for help texts and reports

    def require(self) -> None:
        """Raise MissingDependencyError (with the install line) when a package this method needs is
        missing. Called before any data or model is loaded."""

    def label(self, cfg: "TrainConfig", model: nn.Module | None = None) -> str:
        """A short description of the configured method, e.g. 'Bone-col r=64'; given the model (before
        `apply`, unchanged), with automatic choices resolved, e.g. 'LoRA r=12 (auto)'."""
        raise NotImplementedError

    def count(self, model: nn.Module, cfg: "TrainConfig") -> int:
        """How many parameters `apply(model, cfg)` would train, from the model's shapes alone (the
        model is not changed; a model on the meta device will do)."""
        raise NotImplementedError

    def notes(self, model: nn.Module, cfg: "TrainConfig") -> list[str]:
        """Lines the run prints after its setup report (e.g. how an automatic choice was made);
        `model` is the model `apply` returned."""
        return []

    def apply(self, model: nn.Module, cfg: "TrainConfig") -> nn.Module:
        """Prepare `model` for training (freeze what is not trained); returns the model to train."""
        raise NotImplementedError

    def trainable(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        """What the optimizer updates, in a fixed order (see the module docstring for names)."""
        raise NotImplementedError

    def param_groups(self, model: nn.Module, cfg: "TrainConfig") -> list[tuple[list[str], float]]:
        """(parameter names, learning rate) of each AdamW parameter group, together naming every
        `trainable(model)` parameter once; by default one group at optim.lr."""
        return [([n for n, _ in self.trainable(model)], cfg.optim.lr)]

    def save(self, model: nn.Module, path: Path, tensors: dict[str, Tensor] | None = None) -> None:
        """Write the trained result to the folder `path` (created). `tensors` ({name: full tensor},
        names as `trainable` gives them) replaces the model's own values, e.g. when they were
        gathered from shards."""
        raise NotImplementedError

    def read_trained(self, model: nn.Module, path: Path) -> dict[str, Tensor]:
        """The trained tensors saved at `path`, keyed as `trainable(model)` names them (resuming);
        raises AdapterError when they do not fit `model`."""
        raise NotImplementedError

    def owns(self, path: Path) -> bool:
        """Whether `path` (a folder, or a file) holds a result this method saved (or can read)."""
        raise NotImplementedError

    def load(self, model: nn.Module, path: Path) -> nn.Module:
        """`model` with the result saved at `path` applied, ready for evaluation or merging."""
        raise NotImplementedError

    def fold(self, model: nn.Module) -> None:
        """Training is over and its result saved: make `model` as fast as its base for evaluation
        (e.g. fold adapters into the weights). Optional; by default the model is left as it is."""

    def merged(self, model: nn.Module) -> nn.Module:
        """`model` as `load` returned it, with the result folded into its plain layers and every
        wrapper removed: the model a merged export writes."""
        raise NotImplementedError

    def export_merged(self, base: Path, adapter: Path, dest: Path) -> str:
        """Write the base model at `base` with the result saved at `adapter` folded in, to the new
        path `dest` (what `bone merge` does before its check); returns a summary line. By default:
        load the base in its stored dtype, `load`, `merged`, and let the base's family write it."""
        from ..models import family_of, load_model

        family = family_of(base)
        family.check_save_model(base)
        model = self.merged(self.load(load_model(base), adapter))
        family.save_model(model, base, dest)
        return f"merged the {self.name} result {adapter} with the base model {base}"

    def base_outputs(self, model: nn.Module) -> AbstractContextManager:
        """A context in which `model` computes its base model's outputs as cheaply as the method
        allows; entered only before training, while the trained part is at its initial value (so
        running the model unchanged, the default, gives the same outputs)."""
        return nullcontext()
