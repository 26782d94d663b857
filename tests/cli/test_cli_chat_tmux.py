"""`bone chat` in a real terminal (tmux): the embedded SmolLM2-135M-Instruct with two adapters side by
side. A question gets a reply that appears piece by piece (streamed), /adapter switches, /reset
clears, Ctrl-C stops a reply, Ctrl-D leaves with status 0.

The first adapter is the demo adapter of `make demo` (runs/demo/adapter) when it exists, else a
random stand-in saved under the same name; nothing below depends on what the adapter says. Run
with `-s` to see the final screen (the transcript)."""
from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import bone
import tiny  # noqa: E402

ROOT = Path(__file__).parents[2]
DEMO = ROOT / "runs" / "demo" / "adapter"  # written by `make demo` (bone train configs/demo.yaml)
STARTUP_S, REPLY_S = 600, 300  # generous: the test machine may be shared


class Terminal:
    """One tmux session on a private server, running `command`."""

    def __init__(self, command: str):
        self.server = f"bone-test-{uuid.uuid4().hex[:8]}"
        self.tmux("new-session", "-d", "-s", "chat", "-x", "220", "-y", "80", command)

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.server, *args], check=True, capture_output=True, text=True).stdout

    def screen(self) -> str:
        """Everything the terminal shows and has scrolled away, wrapped lines joined."""
        return self.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "chat").rstrip("\n")

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "chat", "-l", text)
        self.tmux("send-keys", "-t", "chat", "Enter")

    def press(self, key: str) -> None:
        self.tmux("send-keys", "-t", "chat", key)

    def wait(self, done, timeout: float, what: str) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            screen = self.screen()
            if done(screen):
                return screen
            time.sleep(0.05)
        pytest.fail(f"the terminal did not show {what} within {timeout:.0f} s; it shows:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.server, "kill-server"], capture_output=True)


def at_prompt(name: str):
    """The screen ends with the prompt `name> ` (tmux drops the trailing space)."""
    return lambda s: s.rstrip().rsplit("\n", 1)[-1] == f"{name}>"


def ask(term: Terminal, name: str, question: str) -> tuple[str, list[str]]:
    """Type `question`; return the reply and the distinct partial replies seen while it was written."""
    term.type(question)
    head = f"{name}> {question}"
    seen, end = [], time.monotonic() + REPLY_S
    while time.monotonic() < end:
        screen = term.screen()
        reply = screen.rsplit(head, 1)[-1].strip("\n") if head in screen else ""
        if reply.rstrip().endswith(f"\n{name}>"):
            return reply.rstrip()[: -len(f"\n{name}>")], seen
        if reply.strip() and (not seen or seen[-1] != reply):
            seen.append(reply)
        time.sleep(0.03)
    pytest.fail(f"no reply within {REPLY_S} s:\n{term.screen()}")


def stand_in(folder: Path, cfg, seed: int) -> Path:
    return tiny.random_adapter("smollm2-135m", folder, cfg, seed, std=0.002)


@pytest.mark.integration
def test_bone_chat_in_a_real_terminal(tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    demo = DEMO if (DEMO / "adapter_config.json").is_file() else stand_in(tmp_path / "demo" / "adapter",
                                                                            bone.BoneConfig(r=64), 1)
    shard = stand_in(tmp_path / "shard", bone.BoneConfig(r=16, variant="shard"), 2)
    chat = [sys.executable, "-m", "bone", "chat", "--model", "smollm2-135m", "--adapter", str(demo),
            "--adapter", str(shard), "--max-new-tokens", "64"]
    command = (f"cd {shlex.quote(str(ROOT))} && PYTHONPATH={shlex.quote(str(ROOT / 'src'))} "
               f"{shlex.join(chat)} 2>&1; echo \"[exit $?]\"; sleep 60")
    term = Terminal(command)
    try:
        term.wait(at_prompt("demo"), STARTUP_S, "the first prompt")
        reply, partial = ask(term, "demo", "What is 12 + 7?")
        assert reply and len(partial) >= 2, partial  # the text grew on the screen while it was generated
        assert all(reply.startswith(p.rstrip()) for p in partial)

        term.type("/adapter shard")
        term.wait(lambda s: s.rstrip().endswith("(now shard, template alpaca; the conversation is kept)\nshard>"), 30,
                  "the switch to adapter shard")
        other, _ = ask(term, "shard", "And what is 3 + 4?")
        assert other

        term.type("/reset")
        term.wait(lambda s: s.rstrip().endswith("(conversation cleared)\nshard>"), 30, "the reset")
        term.type("/adapter nope")
        unknown = "error: no adapter named 'nope'; loaded: 'demo', 'shard' (or 'base': the model without adapter)"
        term.wait(lambda s: s.rstrip().endswith(unknown + "\nshard>"), 30, "the unknown adapter error")

        term.type("Count from 1 to 100, one number per line.")
        term.wait(lambda s: s.rsplit("one number per line.", 1)[-1].strip() != "", REPLY_S, "the reply starting")
        term.press("C-c")
        term.wait(lambda s: s.rstrip().endswith(" [stopped]\nshard>"), REPLY_S, "the reply stopped by Ctrl-C")

        term.press("C-d")
        screen = term.wait(lambda s: "[exit " in s, 30, "the chat leaving")
        assert screen.rstrip().endswith("[exit 0]")
        print("\n" + screen)
    finally:
        term.close()
