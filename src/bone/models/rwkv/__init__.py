"""RWKV-7 ("x070") and RWKV-6 ("x060") for bone: BlinkDL .pth in, PyTorch model, merged .pth out.

    model = load_rwkv("RWKV-x060-World-3B.pth", dtype=torch.bfloat16)   # sizes read from the file
    tok = WorldTokenizer(); check_vocab(model, tok)
    merge_pth("base.pth", "out/adapter", "merged.pth")                   # loads in the rwkv runtime
"""
from .checkpoint import config_from_state_dict, detect_version, load_rwkv, read_checkpoint, save_pth
from .config import RWKVConfig
from .merge import merge_pth
from .modeling import RWKVCausalLMOutput, RWKVForCausalLM
from .tokenizer import WorldTokenizer, check_vocab

__all__ = [
    "RWKVCausalLMOutput", "RWKVConfig", "RWKVForCausalLM", "WorldTokenizer", "check_vocab",
    "config_from_state_dict", "detect_version", "load_rwkv", "merge_pth", "read_checkpoint", "save_pth",
]
