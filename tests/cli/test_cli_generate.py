"""`bone generate` on tiny models (a Llama folder and an RWKV-7 .pth) through bone.cli.main: the
replies are exactly the library's (bone.generation with the adapter loaded alone), adapters are
named and chosen per line, templates follow the training run, and bad input is one line that
leaves nothing behind."""
from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

import tiny  # noqa: E402

import bone
from bone.generation import GenerationConfig, generate, prompt_format, read_prompt_file
from bone.generation.prompt_file import Prompt

FILE = [{"prompt": "12 + 7 ="}, {"messages": [{"role": "user", "content": "hi there"}], "id": 7},
        {"prompt": "what is 3 times 4?", "adapter": "beta"}, {"prompt": "base line", "adapter": "base"}]


def reference(model_path, adapter, prompts, template, tokenizer=None, batch_size=8, **cfg):
    """The library's replies: the model with `adapter` (a folder, or None) loaded alone."""
    model = bone.load_model(model_path)
    tok = bone.load_tokenizer(tokenizer or model_path)
    if adapter is not None:
        bone.load(model, adapter)
    return generate(model.eval(), tok, prompts, prompt_format(tok, template), GenerationConfig(**cfg),
                    batch_size=batch_size)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_one_prompt_streams_the_adapters_reply(bone_cli, model_dir, adapters):
    code, out, err = bone_cli("generate", "--model", model_dir, "--adapter", adapters["alpha"], "--prompt", "1 + 2 =",
                              "--max-new-tokens", 12)
    want = reference(model_dir, adapters["alpha"], [Prompt.from_text("1 + 2 =")], "alpaca", max_new_tokens=12)[0]
    assert code == 0 and want.text.strip() and out == want.text + "\n"


def test_a_file_with_two_adapters_and_per_line_choices(bone_cli, model_dir, adapters, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", FILE)
    out_file = tmp_path / "replies.jsonl"
    code, out, err = bone_cli("generate", "--model", model_dir, "--adapter", adapters["alpha"],
                              "--adapter", f"beta={adapters['beta']}", "--file", prompts, "--out", out_file,
                              "--batch-size", 2, "--max-new-tokens", 6)
    assert code == 0 and out == "" and f"wrote 6 replies to {out_file}" in err
    got = [json.loads(line) for line in out_file.read_text().splitlines()]
    # lines without "adapter" get a reply from each adapter, in order; the others from the one they name
    assert [(r.get("id"), r["adapter"]) for r in got] == [(None, "alpha"), (None, "beta"), (7, "alpha"), (7, "beta"),
                                                          (None, "beta"), (None, "base")]
    assert got[2]["messages"] == FILE[1]["messages"] and all(r["new_tokens"] == 6 for r in got)
    read = read_prompt_file(prompts)
    for name, adapter, rows, template in [("alpha", adapters["alpha"], [0, 1], "alpaca"),
                                          ("beta", adapters["beta"], [0, 1, 2], "alpaca"),
                                          ("base", None, [3], "chat")]:  # the model alone: its chat template
        want = reference(model_dir, adapter, [read[i] for i in rows], template, batch_size=2, max_new_tokens=6)
        mine = [r for r in got if r["adapter"] == name]
        assert [r["response"] for r in mine] == [c.text for c in want]
        assert [r["prompt_tokens"] for r in mine] == [c.prompt_tokens for c in want]


def test_the_training_template_comes_from_the_run_folder(bone_cli, model_dir, adapters, tmp_path):
    run = adapters["alpha"].parent
    (run / "config.yaml").write_text("data:\n  template: chat\n")
    try:
        code, out, _ = bone_cli("generate", "--model", model_dir, "--adapter", adapters["alpha"], "--prompt", "hi",
                                "--max-new-tokens", 5, "--out", tmp_path / "o.jsonl")
        forced = bone_cli("generate", "--model", model_dir, "--adapter", adapters["alpha"], "--prompt", "hi",
                          "--max-new-tokens", 5, "--template", "alpaca", "--out", tmp_path / "f.jsonl")
    finally:
        (run / "config.yaml").unlink()
    assert code == 0 and forced[0] == 0
    (chat,), (alpaca,) = [[json.loads(x) for x in (tmp_path / f).read_text().splitlines()] for f in ("o.jsonl", "f.jsonl")]
    tok = bone.load_tokenizer(model_dir)
    user = [{"role": "user", "content": "hi"}]
    assert chat["prompt_tokens"] == len(prompt_format(tok, "chat").prompt_ids(user))
    assert alpaca["prompt_tokens"] == len(prompt_format(tok, "alpaca").prompt_ids(user)) != chat["prompt_tokens"]
    assert out == chat["response"] + "\n" and chat["adapter"] == "alpha"  # streamed too; named after its run folder


def test_sampling_follows_the_seed(bone_cli, model_dir, adapters):
    argv = ["generate", "--model", model_dir, "--adapter", adapters["beta"], "--prompt", "1 + 2 =",
            "--max-new-tokens", 10, "--temperature", 1.5, "--top-k", 50, "--top-p", 0.95]
    runs = [bone_cli(*argv, "--seed", seed)[1] for seed in (1, 1, 2)]
    want = reference(model_dir, adapters["beta"], [Prompt.from_text("1 + 2 =")], "alpaca", max_new_tokens=10,
                     temperature=1.5, top_k=50, top_p=0.95, seed=1)[0]
    assert runs[0] == runs[1] == want.text + "\n" and runs[2] != runs[0]


def test_a_tokenizer_without_chat_template_falls_back_with_a_note(bone_cli, model_dir, tokenizer, tmp_path):
    import copy

    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    plain.save_pretrained(tmp_path / "tok")
    code, out, err = bone_cli("generate", "--model", model_dir, "--tokenizer", tmp_path / "tok", "--prompt", "hi",
                              "--max-new-tokens", 5, "--template", "chat")
    note = "note: this model's tokenizer has no chat template: using the training template (alpaca) instead\n"
    want = reference(model_dir, None, [Prompt.from_text("hi")], "alpaca", tokenizer=tmp_path / "tok", max_new_tokens=5)
    assert code == 0 and err.count(note) == 1 and out == want[0].text + "\n"


@pytest.mark.parametrize("template,noted", [("alpaca", True), ("chat", False)])
def test_system_with_the_alpaca_template_is_noted_not_silently_dropped(bone_cli, model_dir, template, noted):
    code, out, err = bone_cli("generate", "--model", model_dir, "--prompt", "hi", "--max-new-tokens", 3,
                              "--template", template, "--system", "Be brief.")
    assert code == 0 and out
    assert ("note: --system is not used: the alpaca template has no system message" in err) == noted


def test_rwkv_pth_with_an_adapter(bone_cli, tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "models" / "rwkv"))
    from rwkv_testlib import make_x070

    pth = tmp_path / "tiny-x070.pth"
    torch.save(make_x070(vocab=65536), pth)  # the World tokenizer's vocabulary
    adapter = tiny.random_adapter(pth, tmp_path / "ad", bone.BoneConfig(r=16, variant="shard"), 3, std=0.5)
    code, out, err = bone_cli("generate", "--model", pth, "--adapter", adapter, "--prompt", "Hello", "--max-new-tokens", 6)
    want = reference(pth, adapter, [Prompt.from_text("Hello")], "alpaca", max_new_tokens=6)[0]
    assert code == 0 and out == want.text + "\n" and len(want.token_ids) == 6
    code, out, err = bone_cli("generate", "--model", pth, "--prompt", "Hello", "--max-new-tokens", 3)
    assert code == 0 and "no chat template" in err  # the model alone asks for its chat template; World has none
    code, _, err = bone_cli("export", "--to", "rwkv-peft", "--adapter", adapter, "--out", tmp_path / "rwkv-0.pth")
    assert code == 0, err
    code, out2, err = bone_cli("generate", "--model", pth, "--adapter", tmp_path / "rwkv-0.pth", "--prompt", "Hello",
                               "--max-new-tokens", 6)  # RWKV-PEFT's file: the same adapter, named "rwkv-0"
    assert code == 0 and out2 == want.text + "\n", err


@pytest.mark.parametrize("case", ["adapter line", "bad json", "no such folder", "twins", "base", "folder name",
                                  "exists", "seed greedy", "batch size", "no out folder"])
def test_bad_input_is_one_line_and_writes_nothing(bone_cli, model_dir, adapters, tmp_path, case):
    prompts = write_jsonl(tmp_path / "p.jsonl", FILE[:2])
    out = tmp_path / "out.jsonl"
    argv = ["--model", model_dir, "--adapter", adapters["alpha"], "--file", prompts, "--out", out]
    pattern = {
        "adapter line": (["--file", write_jsonl(tmp_path / "q.jsonl", [FILE[0], {"prompt": "x", "adapter": "gamma"}])],
                         r"q.jsonl line 2: \"adapter\": 'gamma' is not loaded; loaded: 'alpha' \(or 'base': the model "
                         r"without adapter\); fix the line or load it with --adapter gamma=DIR"),
        "bad json": (["--file", tmp_path / "r.jsonl"], r"r.jsonl line 2: malformed JSON"),
        "no such folder": (["--adapter", tmp_path / "nowhere"], "adapter directory .*nowhere does not exist"),
        "twins": (["--adapter", f"alpha={adapters['beta']}"], r"two adapters are named 'alpha' .*--adapter NAME=DIR"),
        "base": (["--adapter", f"base={adapters['beta']}"], "the adapter name 'base' stands for the model without"),
        "folder name": (["--adapter", tmp_path / "my.adapter"], r"adapter name 'my.adapter' is not usable.*named after "
                                                                r"its folder: name it with --adapter NAME="),
        "exists": ([], r"out.jsonl exists: pass --overwrite"),
        "seed greedy": (["--seed", 3], "top_p, top_k and seed only apply when sampling"),
        "batch size": (["--batch-size", 0], "--batch-size must be a positive whole number"),
        "no out folder": (["--out", tmp_path / "no" / "o.jsonl"], r"the folder .*no does not exist"),
    }[case]
    (tmp_path / "r.jsonl").write_text('{"prompt": "a"}\n{"prompt": \n')
    if case == "folder name":
        shutil.copytree(adapters["beta"], tmp_path / "my.adapter")
    if case == "exists":
        out.write_text("keep me\n")
    code, stdout, err = bone_cli("generate", *argv, *pattern[0])
    assert code == 1 and stdout == "" and len(err.splitlines()) == 1
    assert err.startswith("bone generate: error: ")
    assert re.search(pattern[1], err), err
    assert (out.read_text() == "keep me\n") if case == "exists" else not out.exists()


def test_prompt_and_file_together_is_a_usage_error(bone_cli, model_dir, tmp_path):
    code, _, err = bone_cli("generate", "--model", model_dir, "--prompt", "a", "--file", tmp_path / "p.jsonl")
    assert code == 2 and "not allowed with argument" in err
