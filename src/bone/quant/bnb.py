"""The one place bone imports bitsandbytes: on demand, never at `import bone`.

`require()` imports it for a feature the user asked for (quantized loading, dequantizing) and
raises `MissingDependencyError` with the install command when it is missing. `loaded()` answers
"could this module be a bitsandbytes layer?" without importing anything: a bitsandbytes layer
can only exist once bitsandbytes has been imported by someone.
"""
from __future__ import annotations

import sys
from types import ModuleType

from ..errors import require as _require

INSTALL = 'pip install "bitsandbytes>=0.50"  (or pip install "bone[quant]")'


def require() -> ModuleType:
    """The bitsandbytes package; MissingDependencyError with the install command when absent."""
    return _require("bitsandbytes", INSTALL, "quantized bases (4-bit nf4/fp4, 8-bit int8)")


def loaded() -> ModuleType | None:
    """bitsandbytes when some code has already imported it, else None (imports nothing)."""
    bnb = sys.modules.get("bitsandbytes")
    return bnb if bnb is not None and hasattr(bnb, "nn") else None
