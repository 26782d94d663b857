"""Data for bone: records from files / the bundled generator / the Hub, templates, tokenization.

The names below are imported on first use, so reading `templates.TEMPLATES` (the CLI's choices)
does not import torch.
"""
from .. import lazy

from ..errors import DataError

_WHERE = {
    "arith": None, "collate": "batch", "load_records": "sources", "TEMPLATES": "templates", "Example": "templates",
    "render_prompt": "templates", "to_examples": "templates", "IGNORE": "tokenize", "TokenizedDataset": "tokenize",
    "encode_prompt": "tokenize", "tokenize_examples": "tokenize",
}
__all__ = ["DataError", *sorted(_WHERE)]
__getattr__, __dir__ = lazy.names(__name__, _WHERE, globals())
