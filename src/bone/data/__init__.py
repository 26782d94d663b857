"""Data for bone: records from files / the bundled generator / the Hub, templates, tokenization."""
from . import arith
from .collate import collate
from ..errors import DataError
from .sources import load_records
from .templates import TEMPLATES, Example, render_prompt, to_examples
from .tokenize import IGNORE, TokenizedDataset, encode_prompt, tokenize_examples

__all__ = ["arith", "collate", "DataError", "load_records", "TEMPLATES", "Example", "render_prompt",
           "to_examples", "IGNORE", "TokenizedDataset", "encode_prompt", "tokenize_examples"]
