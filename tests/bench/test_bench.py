"""bone.bench on a tiny Llama: the CLI end to end, and its memory accounting against the shapes."""
from __future__ import annotations

import json

import pytest

from bone import bench
from bone.bench import measure, setups
from bone.bench.scale import GIB, ScaleSpec, kept_per_layer, scale_table

TINY = ["--hidden=64", "--intermediate=128", "--layers=1", "--heads=4", "--vocab=128", "--seq=16", "--batch=2",
        "--r=16", "--mini-r=16", "--lora-r=4", "--threads=1"]


def test_cli_smoke(tmp_path, capsys):
    methods = "frozen,peft-bat,peft-shard,bone-col,bone-shard,bone-col-ref"
    rc = bench.main(TINY + ["--repeats=1", "--warmup=0", "--rss-steps=0", f"--methods={methods}", f"--out={tmp_path}"])
    assert rc == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    rows = data["rows"]
    assert list(rows) == methods.split(",")
    assert rows["frozen"]["step_ratio"] == 1.0 and rows["frozen"]["trainable"] == 0
    assert rows["bone-col"]["trainable"] == rows["peft-bat"]["trainable"] > 0
    assert rows["bone-col"]["extra_kept_bytes"] < min(rows["bone-col-ref"]["extra_kept_bytes"], rows["peft-bat"]["extra_kept_bytes"])
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "| bone-col |" in out and "Flash-Bone col" in out  # result table and the 7B scale table


def test_bad_arguments_write_nothing(tmp_path, capsys):
    assert bench.main(TINY + ["--methods=bone-col", f"--out={tmp_path / 'a'}"]) == 2  # no frozen baseline
    assert bench.main(TINY + ["--intermediate=120", f"--out={tmp_path / 'b'}"]) == 2  # not a multiple of r
    assert bench.main(TINY + ["--repeats=0", f"--out={tmp_path / 'c'}"]) == 2
    err = capsys.readouterr().err
    assert "multiple of r=16" in err and "--repeats must be >= 1" in err
    assert not any((tmp_path / d).exists() for d in "abc")


def test_kept_bytes_match_the_scale_model():
    """Measured with saved-tensor hooks on a tiny Llama, the differences between methods are
    exactly what `scale.kept_per_layer` predicts from the shapes (fp32, one layer)."""
    cfg = setups.BenchConfig(hidden=64, intermediate=128, layers=1, heads=4, vocab=128, seq=16, batch=2, r=16, mini_r=16)
    base, ids = setups.build_base(cfg), setups.batch(cfg)
    kept = {m: measure.kept_bytes(setups.make(m, base, cfg), ids)
            for m in ("frozen", "peft-bat", "bone-col", "bone-shard", "peft-shard")}
    spec = ScaleSpec(hidden=64, intermediate=128, layers=1, r=16, bytes_per=4, tokens=cfg.batch * cfg.seq)
    model = kept_per_layer(spec)
    assert kept["peft-bat"] - kept["bone-col"] == model["PEFT col (MiSS bat)"]["weight-sized"]
    assert kept["bone-shard"] - kept["frozen"] == model["Flash-Bone shard"]["T x r"]
    assert kept["peft-shard"] == kept["bone-shard"]


def test_scale_table_llama2_7b():
    spec = ScaleSpec()
    rows = kept_per_layer(spec)
    weights_7b = 4 * 4096 * 4096 + 3 * 4096 * 11008  # parameters of the seven projections, per layer
    assert rows["PEFT col (MiSS bat)"]["weight-sized"] * spec.layers == 2 * weights_7b * 2 * 32
    assert rows["Flash-Bone col"]["weight-sized"] == 0
    text = scale_table(spec)
    assert f"| PEFT col (MiSS bat) | {2 * weights_7b * 2 * 32 / GIB:.1f} |" in text


@pytest.mark.integration
def test_peak_rss_child():
    rss = measure.child_peak_rss("bone-shard", TINY + ["--rss-steps=1"])
    assert 50 < rss < 16_000
