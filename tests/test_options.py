"""bone.options on TrainConfig (and a small dataclass of its own): YAML + overrides, validation
errors that name the key and type, documentation from field comments, defaults rendered unbuilt."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from bone import BoneConfig
from bone.errors import ConfigError
from bone.options import field_comments, from_dict, load, parse_overrides, render_yaml, to_dict
from bone.train import TrainConfig, load_config


def test_yaml_then_overrides_in_both_forms(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  lr: 2e-5\nbone:\n  r: 32\n  variant: shard\n")
    cfg = load_config(f, ["bone.r=16", "--schedule.max_steps", "7", "--data.eval=bundled:arith",
                          "bone.target_modules=[q_proj, v_proj]", "schedule.max_steps=null", "model.gradient_checkpointing=true"])
    assert cfg.optim.lr == 2e-5 and isinstance(cfg.optim.lr, float)  # YAML 1.1 reads 2e-5 as a string
    assert cfg.bone == BoneConfig(r=16, variant="shard", target_modules=["q_proj", "v_proj"])
    assert cfg.schedule.max_steps is None and cfg.data.eval == "bundled:arith"
    assert cfg.model.gradient_checkpointing is True


@pytest.mark.parametrize("args, words", [
    (["optim.lrr=1"], ["optim.lrr", "did you mean 'lr'"]),
    (["nosuch.key=1"], ["nosuch", "known keys"]),
    (["optim.lr=fast"], ["optim.lr", "expected float"]),
    (["bone.r=1.5"], ["bone.r", "expected int"]),
    (["logging.progress=maybe"], ["logging.progress", "expected bool"]),
    (["bone=3"], ["'bone' is a section"]),
    (["optim.lr.x=3"], ["'optim.lr' is a value"]),
    (["schedule.scheduler=step"], ["schedule.scheduler", "cosine"]),
    (["bone.variant=diag"], ["BoneConfig.variant"]),
    (["--optim.lr"], ["needs a value"]),
    (["stray"], ["cannot read argument 'stray'"]),
])
def test_bad_overrides_name_the_key(args, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, args)
    for w in words:
        assert w in str(e.value)


def test_bad_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "t.yaml").write_text("optim: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML at line 2, column 1: expected ',' or ']'") as err:
        load_config(tmp_path / "t.yaml")
    assert "\n" not in str(err.value)
    (tmp_path / "s.yaml").write_text("optim:\n  lr: 1\n bad: 2\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line 3, column 2: \S") as err:
        load_config(tmp_path / "s.yaml")
    assert "\n" not in str(err.value)
    (tmp_path / "u.yaml").write_text("optim:\n  learning_rate: 1\n")
    with pytest.raises(ConfigError, match="'optim.learning_rate'"):
        load_config(tmp_path / "u.yaml")
    (tmp_path / "v.yaml").write_text("schedule:\n  batch_size: four\n")
    with pytest.raises(ConfigError, match=r"'schedule.batch_size': expected int, got 'four'"):
        load_config(tmp_path / "v.yaml")
    (tmp_path / "w.yaml").write_text("model: smollm2\n")
    with pytest.raises(ConfigError, match="section 'model' must be a mapping"):
        load_config(tmp_path / "w.yaml")


def test_parse_overrides_forms():
    assert parse_overrides(["a.b=1", "--c.d", "2", "--e-f=3"]) == [("a.b", "1"), ("c.d", "2"), ("e_f", "3")]


def _leaves(cls, prefix=""):
    for f in dataclasses.fields(cls):
        tp = cls.__dataclass_fields__[f.name].type
        sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(sub):
            yield from _leaves(type(sub), prefix + f.name + ".")
        else:
            yield prefix + f.name, tp


def test_every_field_is_documented_and_rendered():
    text = render_yaml(TrainConfig())
    lines = text.splitlines()
    for key, _ in _leaves(TrainConfig):
        name = key.rsplit(".", 1)[-1]
        assert any(ln.strip().startswith(name + ":") and "#" in ln for ln in lines), key
    for cls in (TrainConfig, BoneConfig, *{type(v) for v in vars(TrainConfig()).values() if dataclasses.is_dataclass(v)}):
        comments = field_comments(cls)
        missing = [f.name for f in dataclasses.fields(cls) if not comments.get(f.name)]
        assert not missing, f"{cls.__name__} fields without a comment: {missing}"


def test_rendered_yaml_round_trips():
    cfg = load_config(None, ["bone.r=16", "bone.target_modules=[q_proj]", "optim.max_grad_norm=null", "bone.dtype=null"])
    assert cfg.bone.dtype is None and load_config(None, ["bone.target_modules=null"]).bone.target_modules is None
    assert from_dict(TrainConfig, yaml.safe_load(render_yaml(cfg))) == cfg
    assert to_dict(cfg)["bone"]["target_modules"] == ["q_proj"]


@dataclasses.dataclass
class Inner:
    size: int = 3  # how many
    names: list[str] | None = None  # which ones

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")


@dataclasses.dataclass
class Outer:
    name: str = "x"  # a name
    inner: Inner = dataclasses.field(default_factory=Inner)  # a section


def test_load_works_for_any_dataclass(tmp_path):
    f = tmp_path / "o.yaml"
    f.write_text("inner:\n  size: 5\n")
    assert load(Outer, f, ["--inner.names", "[a, b]", "name=y"]) == Outer("y", Inner(5, ["a", "b"]))
    assert load(Outer) == Outer()
    with pytest.raises(ConfigError, match=r"inner: size must be >= 1, got 0"):  # the dataclass's own check
        load(Outer, None, ["inner.size=0"])
    with pytest.raises(ConfigError, match=r"unknown config key 'inner.sise' \(did you mean 'size'\?\)"):
        load(Outer, None, ["inner.sise=2"])


BUILT = []


@dataclasses.dataclass
class Counted:
    k: int = 1  # a key

    def __post_init__(self):
        BUILT.append(self)


@dataclasses.dataclass
class Holder:
    c: Counted = dataclasses.field(default_factory=Counted)  # a counted section


def test_a_class_renders_its_defaults_without_being_built():
    assert render_yaml(Holder) == "c:  # a counted section\n  k: 1  # (int) a key" and BUILT == []
    assert render_yaml(TrainConfig) == render_yaml(TrainConfig())
    assert render_yaml(Outer) == "name: x  # (str) a name\ninner:  # a section\n  size: 3  # (int) how many\n" \
                                 "  names: null  # (list of str or null) which ones"


def test_mapping_fields_from_yaml_whole_and_entry_by_entry(tmp_path):
    @dataclasses.dataclass
    class Grid:
        lrs: dict[str, list[float]] = dataclasses.field(default_factory=lambda: {"a": [1.0]})  # rates per arm
        names: dict[str, str] | None = None  # optional mapping

    f = tmp_path / "g.yaml"
    f.write_text("lrs:\n  a: [1e-4, 2e-4]\n  b: [3]\n")
    cfg = load(Grid, f, ["lrs.c=[5e-5]", "--lrs.b", "[4]", "names={x: y}"])
    assert cfg.lrs == {"a": [1e-4, 2e-4], "b": [4.0], "c": [5e-5]} and cfg.names == {"x": "y"}
    assert all(isinstance(v, float) for vs in cfg.lrs.values() for v in vs)
    assert load(Grid, f, ["lrs={z: [1]}"]).lrs == {"z": [1.0]}
    with pytest.raises(ConfigError, match=r"'lrs.a'.*list of float"):
        load(Grid, f, ["lrs.a=fast"])
    with pytest.raises(ConfigError, match="mapping of str to list of float"):
        load(Grid, None, ["lrs=[1]"])
    assert yaml.safe_load(render_yaml(cfg))["lrs"] == cfg.lrs
