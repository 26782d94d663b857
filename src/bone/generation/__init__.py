"""Generation for bone models: replies to prompts (`generate`) and conversations (`ChatSession`),
for Hugging Face models (KV cache) and RWKV (recurrent state), greedy or sampled, streamed.

    fmt = prompt_format(tokenizer, "chat")        # or "alpaca"; fmt.note says when chat fell back
    cfg = GenerationConfig(max_new_tokens=128, temperature=0.7, top_p=0.9, seed=0)
    outs = generate(model, tokenizer, read_prompt_file("prompts.jsonl"), fmt, cfg, batch_size=8)
    chat = ChatSession(model, tokenizer, fmt, cfg)
    for piece in chat.send("Hello"): print(piece, end="", flush=True)

Nothing here imports transformers or torch models until a model is given.
"""
from .batch import Completion, generate, generate_ids
from .chat import ChatSession
from .config import GenerationConfig
from .decoder import Decoder, decoder_for
from .formats import AlpacaFormat, ChatTemplateFormat, PromptFormat, prompt_format, trained_template
from .prompt_file import Prompt, read_prompt_file
from .sampling import Sampler, filter_logits
from .stream import TextStream

__all__ = ["AlpacaFormat", "ChatSession", "ChatTemplateFormat", "Completion", "Decoder", "GenerationConfig",
           "Prompt", "PromptFormat", "Sampler", "TextStream", "decoder_for", "filter_logits", "generate",
           "generate_ids", "prompt_format", "read_prompt_file", "trained_template"]
