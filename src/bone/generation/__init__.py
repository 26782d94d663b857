"""Generation for bone models: replies to prompts (`generate`) and conversations (`ChatSession`),
for Hugging Face models (KV cache) and RWKV (recurrent state), greedy or sampled, streamed.

    fmt = prompt_format(tokenizer, "chat")        # or "alpaca"; fmt.note says when chat fell back
    cfg = GenerationConfig(max_new_tokens=128, temperature=0.7, top_p=0.9, seed=0)
    outs = generate(model, tokenizer, read_prompt_file("prompts.jsonl"), fmt, cfg, batch_size=8)
    chat = ChatSession(model, tokenizer, fmt, cfg)
    for piece in chat.send("Hello"): print(piece, end="", flush=True)

The names below are imported on first use, so reading `GenerationConfig` (the command line's
`--help`) does not import torch; nothing imports transformers or torch models until a model is given.
"""
from .. import lazy

_WHERE = {
    "Completion": "batch", "generate": "batch", "generate_ids": "batch", "ChatSession": "chat",
    "GenerationConfig": "config", "Decoder": "decoder", "decoder_for": "decoder", "AlpacaFormat": "formats",
    "ChatTemplateFormat": "formats", "PromptFormat": "formats", "prompt_format": "formats",
    "trained_template": "formats", "Prompt": "prompt_file", "read_prompt_file": "prompt_file",
    "Sampler": "sampling", "filter_logits": "sampling", "TextStream": "stream",
}
__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy.names(__name__, _WHERE, globals())
