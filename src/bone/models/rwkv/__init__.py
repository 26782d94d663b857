"""RWKV-7 ("x070") and RWKV-6 ("x060") for bone: BlinkDL .pth in, PyTorch model, merged .pth out.

    model = load_rwkv("RWKV-x060-World-3B.pth", dtype=torch.bfloat16)   # sizes read from the file
    tok = WorldTokenizer(); check_vocab(model, tok)
    merge_pth("base.pth", "out/adapter", "merged.pth")                   # loads in the rwkv runtime

The names below are imported on first use, so `import bone` (which registers `family.RWKVFamily`)
does not import the model code and transformers.
"""
from ... import lazy

_WHERE = {
    "config_from_state_dict": "checkpoint", "detect_version": "checkpoint", "load_rwkv": "checkpoint",
    "read_checkpoint": "checkpoint", "save_pth": "checkpoint", "RWKVConfig": "config", "merge_pth": "merge",
    "RWKVCausalLMOutput": "modeling", "RWKVForCausalLM": "modeling", "WorldTokenizer": "tokenizer",
    "check_vocab": "tokenizer",
}
__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy.names(__name__, _WHERE, globals())
