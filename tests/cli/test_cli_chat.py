"""`bone chat` through bone.cli.main with its input piped (the real terminal is tests/cli/
test_cli_chat_tmux.py): the transcript is exactly the library's ChatSession's, /adapter switches
and keeps the conversation, /reset forgets it, mistakes are one line and the chat goes on, a real
SIGINT stops a reply and keeps what was written, end of input leaves with status 0."""
from __future__ import annotations

import io
import signal
import sys
from pathlib import Path

import pytest
import torch

import bone
import tiny  # noqa: E402
from bone.cli import chat as chat_command
from bone.cli import inference
from bone.generation import ChatSession, GenerationConfig, prompt_format

LOADED = "'alpha', 'beta' (or 'base': the model without adapter)"


def session_like_the_cli(model_path, adapters: dict, max_new_tokens: int, template="alpaca"):
    """The library's ChatSession over the model with `adapters` ({name: folder}) side by side, the first active."""
    model = bone.load_model(model_path)
    for name, path in adapters.items():
        bone.load(model, path, name=name)
    bone.use(model, next(iter(adapters)))
    tok = bone.load_tokenizer(model_path)
    return ChatSession(model.eval(), tok, prompt_format(tok, template), GenerationConfig(max_new_tokens=max_new_tokens),
                       switch_adapter=lambda n: bone.use(model, None if n == "base" else n))


def say(session, text):
    return "".join(session.send(text))


def chat_cli(bone_cli, monkeypatch, lines, *argv):
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(line + "\n" for line in lines)))
    return bone_cli("chat", *argv)


def test_a_conversation_is_the_librarys(bone_cli, monkeypatch, model_dir, adapters):
    lines = ["hello", "/adapter", "/adapter beta", "and now?", "/adapter zz", "/foo", "/reset", "/help", "fresh start"]
    code, out, err = chat_cli(bone_cli, monkeypatch, lines, "--model", model_dir, "--adapter", adapters["alpha"],
                              "--adapter", f"beta={adapters['beta']}", "--max-new-tokens", 12)
    ref = session_like_the_cli(model_dir, {"alpha": adapters["alpha"], "beta": adapters["beta"]}, 12)
    first = say(ref, "hello")
    ref.use_adapter("beta")
    second = say(ref, "and now?")
    assert len(ref.messages) == 4  # the switch kept the first turn
    ref.reset()
    third = say(ref, "fresh start")
    assert first and second and third and len({first, second, third}) == 3
    want = (f"bone chat: {model_dir}, adapters: alpha (active), beta, base; template alpaca. /help for commands, "
            f"Ctrl-D leaves.\n"
            f"alpha> {first}\n"
            f"alpha> adapters: alpha (active), beta, base\n"
            f"alpha> (now beta, template alpaca; the conversation is kept)\n"
            f"beta> {second}\n"
            f"beta> error: no adapter named 'zz'; loaded: {LOADED}\n"
            f"beta> error: unknown command '/foo': /help lists the commands\n"
            f"beta> (conversation cleared)\n"
            f"beta> {chat_command.HELP}\n"
            f"beta> {third}\n"
            f"beta> \n")
    assert code == 0 and out == want


def test_base_uses_the_chat_template_and_a_long_conversation_is_one_line(bone_cli, monkeypatch, model_dir, adapters):
    long = "1 + 2 + 3 " * 40
    code, out, _ = chat_cli(bone_cli, monkeypatch, ["/adapter base", long, "hi"], "--model", model_dir,
                            "--adapter", adapters["alpha"], "--max-new-tokens", 200)
    ref = session_like_the_cli(model_dir, {"alpha": adapters["alpha"]}, 200)
    ref.use_adapter("base", prompt_format(ref.tokenizer, "chat"))
    lines = out.splitlines()
    assert code == 0 and lines[1] == "alpha> (now base, template chat; the conversation is kept)"
    assert lines[2].startswith("base> error: the conversation has ") and lines[2].endswith(
        "with max_new_tokens=200 it would pass the model's context of 256 tokens: start over (reset, /reset in bone "
        "chat) or lower max_new_tokens")
    assert out.endswith(f"base> {say(ref, 'hi')}\nbase> \n")


class StopAfter(io.StringIO):
    """A terminal that presses Ctrl-C (a real SIGINT to this process) when the n-th piece of a reply arrives."""

    def __init__(self, n: int):
        super().__init__()
        self.n, self.pieces = n, 0

    def write(self, text):
        written = super().write(text)
        if not text.endswith("> ") and text not in ("\n", ""):
            self.pieces += 1
            if self.pieces == self.n:
                signal.raise_signal(signal.SIGINT)  # Python raises KeyboardInterrupt here, as at a real Ctrl-C
        return written


@pytest.fixture
def ctrl_c():
    """SIGINT raises KeyboardInterrupt, as in a terminal, also where this process was started with SIGINT
    ignored (a background job of a non-interactive shell: Python then leaves it ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_stops_a_reply_and_keeps_it(model_dir, adapters, ctrl_c):
    args = chat_command.parse(["--model", str(model_dir), "--adapter", str(adapters["alpha"]), "--max-new-tokens", "40"])
    loaded = inference.Loaded(args, inference.adapter_specs(args.adapter))
    session = ChatSession(loaded.model, loaded.tokenizer, loaded.format("alpha"), inference.generation_config(args),
                          switch_adapter=loaded.switch)
    terminal = StopAfter(3)
    inputs = iter(["count with me", KeyboardInterrupt(), "go on"])

    def read(prompt):
        terminal.write(prompt)
        item = next(inputs, None)
        if item is None:
            raise EOFError
        if isinstance(item, BaseException):
            raise item
        return item

    assert chat_command.Chat(loaded, session, terminal).loop(read) == 0
    text = terminal.getvalue()
    assert " [stopped]\n" in text and "alpha> \n(Ctrl-D leaves)\n" in text
    stopped = session.messages[1]["content"]
    assert session.messages[0]["content"] == "count with me" and stopped and len(session.messages) == 4
    assert f"alpha> {stopped} [stopped]\n" in text
    assert session.last.finish_reason in ("eos", "length") and text.endswith(f"{session.last.text}\nalpha> \n")


def test_rwkv_chat_with_the_world_tokenizer(bone_cli, monkeypatch, tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1] / "models" / "rwkv"))
    from rwkv_testlib import make_x070

    pth = tmp_path / "tiny-x070.pth"
    torch.save(make_x070(vocab=65536), pth)
    adapter = tiny.random_adapter(pth, tmp_path / "ad", bone.BoneConfig(r=16, variant="shard"), 3, std=0.5)
    code, out, err = chat_cli(bone_cli, monkeypatch, ["Hello", "More", "/adapter base", "Hi"], "--model", pth,
                              "--adapter", adapter, "--max-new-tokens", 5)
    ref = session_like_the_cli(pth, {"ad": adapter}, 5)
    replies = [say(ref, "Hello"), say(ref, "More")]
    ref.use_adapter("base")
    replies.append(say(ref, "Hi"))
    assert code == 0 and out.splitlines()[1:] == [
        f"ad> {replies[0]}", f"ad> {replies[1]}", "ad> (now base, template alpaca; the conversation is kept)",
        f"base> {replies[2]}", "base> "]
    assert err.count("note: this model's tokenizer has no chat template") == 1  # when base came into use


@pytest.mark.parametrize("argv,pattern", [
    (["--adapter", "nowhere"], "adapter directory nowhere does not exist"),
    (["--temperature", "-1"], "temperature must be 0 (greedy) or a positive number"),
    (["--device", "gpu"], "--device 'gpu' is not a device: use cpu, cuda, cuda:N or auto"),
])
def test_bad_options_are_one_line_before_loading(bone_cli, model_dir, argv, pattern):
    code, out, err = bone_cli("chat", "--model", model_dir, *argv)
    assert code == 1 and out == "" and err.startswith(f"bone chat: error: {pattern}") and len(err.splitlines()) == 1
