"""Data for bone: records from files / the bundled generator / the Hub, templates, tokenization.

The names below are imported on first use, so reading `templates.TEMPLATES` (the CLI's choices)
does not import torch.
"""
from importlib import import_module

from ..errors import DataError

_WHERE = {
    "arith": None, "collate": "batch", "load_records": "sources", "TEMPLATES": "templates", "Example": "templates",
    "render_prompt": "templates", "to_examples": "templates", "IGNORE": "tokenize", "TokenizedDataset": "tokenize",
    "encode_prompt": "tokenize", "tokenize_examples": "tokenize",
}
__all__ = ["DataError", *sorted(_WHERE)]


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _WHERE[name] is None:
        return import_module(f".{name}", __name__)
    return getattr(import_module(f".{_WHERE[name]}", __name__), name)
