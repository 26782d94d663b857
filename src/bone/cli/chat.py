"""`bone chat`: talk to a model and its adapters in the terminal, the reply streamed as it comes.

The conversation is kept (Hugging Face models keep their KV cache between turns, RWKV its
recurrent state: a turn reads only what is new). Commands: /reset forgets the conversation,
/adapter NAME switches to another loaded adapter ("base": the model without adapter) keeping the
conversation, /adapter alone lists them, /help. Ctrl-C stops a reply (the part written so far is
kept); Ctrl-D leaves. A mistake (an unknown adapter or command, a conversation grown past the
model's context) prints one line and the chat goes on.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from . import inference
from .common import new_parser

ABOUT = "talk to a model and its adapters (streamed, /adapter to switch)"
USAGE = "bone chat --model M [--adapter DIR ...]"
OOM_HINT = "Try --max-new-tokens lower, --dtype bfloat16, or /reset to shorten the conversation"
HELP = """\
commands:
  /reset          forget the conversation
  /adapter        list the loaded adapters
  /adapter NAME   switch to adapter NAME (base: the model without adapter); the conversation is kept
  /help           this text
Ctrl-C stops a reply, Ctrl-D (on an empty line) leaves."""


def parser() -> argparse.ArgumentParser:
    p = new_parser("bone chat", description="Talk to a model and its adapters; replies stream as they are "
                                            "generated.", epilog=HELP)
    inference.add_arguments(p)
    return p


def parse(argv: list[str]) -> argparse.Namespace:
    return parser().parse_args(argv)


class Chat:
    """The read-reply loop around a ChatSession."""

    def __init__(self, loaded: inference.Loaded, session, out=None):
        self.loaded, self.session, self.out = loaded, session, out or sys.stdout

    def say(self, text: str = "", end: str = "\n") -> None:
        self.out.write(text + end)
        self.out.flush()

    def adapters(self) -> str:
        names = [s.name for s in self.loaded.specs] + [inference.BASE]
        return ", ".join(f"{n} (active)" if n == self.active else n for n in names)

    @property
    def active(self) -> str:
        return self.session.adapter or self.loaded.first

    def command(self, line: str) -> None:
        from ..errors import BoneError

        word, _, arg = line.partition(" ")
        arg = arg.strip()
        if word == "/reset" and not arg:
            self.session.reset()
            self.say("(conversation cleared)")
        elif word == "/adapter" and not arg:
            self.say(f"adapters: {self.adapters()}")
        elif word == "/adapter":
            try:
                self.loaded.check(arg)
                self.session.use_adapter(arg, self.loaded.format(arg))
            except BoneError as err:
                self.say(f"error: {err}")
                return
            self.say(f"(now {arg}, template {self.session.fmt.name}; the conversation is kept)")
        elif word == "/help":
            self.say(HELP)
        else:
            self.say(f"error: unknown command {line!r}: /help lists the commands")

    def reply(self, text: str) -> None:
        from ..errors import BoneError

        pieces = None
        try:
            pieces = self.session.send(text)  # bad input (a conversation past the context) raises here
            for piece in pieces:
                self.say(piece, end="")
        except BoneError as err:
            self.say(f"error: {err}")
            return
        except KeyboardInterrupt:
            if pieces is not None:
                pieces.close()  # keeps the reply so far
            self.say(" [stopped]", end="")
        self.say()

    def loop(self, read=input) -> int:
        while True:
            try:
                line = read(f"{self.active}> ").strip()
            except EOFError:
                self.say()
                return 0
            except KeyboardInterrupt:
                self.say("\n(Ctrl-D leaves)")
                continue
            if line.startswith("/"):
                self.command(line)
            elif line:
                self.reply(line)


def run(a: argparse.Namespace) -> int:
    from ..generation.chat import ChatSession

    cfg = inference.generation_config(a)
    specs = inference.adapter_specs(a.adapter)
    loaded = inference.Loaded(a, specs)
    session = ChatSession(loaded.model, loaded.tokenizer, loaded.format(loaded.first), cfg, system=a.system,
                          switch_adapter=loaded.switch if specs else None)
    chat = Chat(loaded, session)
    what = f"adapters: {chat.adapters()}" if specs else "no adapter"
    chat.say(f"bone chat: {a.model}, {what}; template {session.fmt.name}. /help for commands, Ctrl-D leaves.")
    if importlib.util.find_spec("readline") is not None:
        importlib.import_module("readline")  # line editing and history for input()
    return chat.loop()
