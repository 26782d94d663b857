"""bone.generation against transformers' `generate`, and a chat turn with and without its cache,
on the embedded SmolLM2-135M-Instruct, side by side in one run (alternating repeats, medians).

    python benchmarks/bench_generation.py --threads 1 --repeats 5

1. batched greedy decoding of the bundled arithmetic test problems (alpaca template, as `bone eval`
   feeds them): bone.generation.generate_ids (plain, and streaming every row's text) vs
   model.generate (same tokens are checked);
2. one chat turn after a long conversation: ChatSession (reads only the new turn) vs a fresh
   generate on the whole rendered history (what re-reading the history would cost).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats of each side (medians are reported)")
    ap.add_argument("--batch", type=int, default=20, help="prompts in the batch")
    ap.add_argument("--new-tokens", type=int, default=32, help="tokens generated per prompt")
    ap.add_argument("--turns", type=int, default=6, help="chat turns before the timed one")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import bone
    from bone.data import arith
    from bone.generation import ChatSession, GenerationConfig, generate, generate_ids, prompt_format

    model, tok = bone.load_model("smollm2-135m").eval(), bone.load_tokenizer("smollm2-135m")
    fmt = prompt_format(tok, "alpaca")
    rows = [fmt.prompt_ids([{"role": "user", "content": r["question"]}])
            for r in arith.generate(args.batch, split="test")]
    cfg = GenerationConfig(max_new_tokens=args.new_tokens)
    width = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])

    def ours():
        return [c.token_ids for c in generate_ids(model, tok, rows, cfg, batch_size=len(rows))]

    def streamed():
        return generate_ids(model, tok, rows, cfg, batch_size=len(rows), on_text=lambda i, piece: None)

    def theirs():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        return out[:, width:].tolist()

    mine = ours()
    same = mine == [row[:len(t)] for row, t in zip(theirs(), mine)]  # transformers pads rows that stopped
    t_ours, t_streamed, t_theirs = [], [], []
    for _ in range(args.repeats):
        t_ours.append(_time(ours))
        t_streamed.append(_time(streamed))
        t_theirs.append(_time(theirs))
    a, s, b = (statistics.median(t) for t in (t_ours, t_streamed, t_theirs))
    print(f"batched greedy, {len(rows)} prompts x {args.new_tokens} new tokens, {args.threads} thread(s):")
    print(f"  bone.generation {a:.2f} s (streamed as text: {s:.2f} s)   transformers generate {b:.2f} s   "
          f"ratio {a / b:.2f} ({s / b:.2f})   same tokens: {same}")

    chat_fmt = prompt_format(tok, "chat")
    chat_cfg = GenerationConfig(max_new_tokens=args.new_tokens)
    questions = [r["question"] for r in arith.generate(args.turns + 1, split="train")]
    session = ChatSession(model, tok, chat_fmt, chat_cfg)
    for q in questions[:-1]:
        list(session.send(q))
    history = session.messages + [{"role": "user", "content": questions[-1]}]
    t_turn, t_fresh = [], []
    for _ in range(args.repeats):
        before = list(session.messages)
        t_turn.append(_time(lambda: list(session.send(questions[-1]))))
        cached, prompt = session.last.cached_tokens, session.last.prompt_tokens
        session.messages = before  # forget the timed turn; the cache keeps the shared history
        t_fresh.append(_time(lambda: generate(model, tok, [history], chat_fmt, chat_cfg)))
    a, b = statistics.median(t_turn), statistics.median(t_fresh)
    print(f"chat turn {args.turns + 1} ({prompt} prompt tokens, {cached} from the cache):")
    print(f"  ChatSession {a:.2f} s   re-reading the history {b:.2f} s   ratio {a / b:.2f}")


if __name__ == "__main__":
    main()
