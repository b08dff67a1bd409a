"""Recipe schema: loading, validation errors, overrides, defaults, hashing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tmkt_cli import config
from tmkt_cli.config import Recipe, load_recipe, stage_config
from tmkt_cli.errors import TmktError

REPO = Path(__file__).resolve().parent.parent
RECIPES = sorted((REPO / "recipes").rglob("*.yaml"))


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_every_shipped_recipe_loads(path):
    recipe = load_recipe(path)
    assert recipe.name
    # method switches are resolved to booleans
    assert isinstance(recipe.method.tsm, bool)


def test_recipes_exist():
    assert any(p.parent.name == "digits" for p in RECIPES)


def test_defaults_without_file():
    r = load_recipe(None)
    assert r.seed == 42 and r.model.tau == 2.0 and r.model.threshold == 0.5
    assert r.method.name == "tmkt" and r.method.tsm is True and r.method.mag is True


def test_unknown_key_names_full_path_and_closest(tmp_path):
    p = write(tmp_path, "train:\n  epoch: 3\n")
    with pytest.raises(TmktError) as e:
        load_recipe(p)
    assert "'train.epoch'" in str(e.value) and "'train.epochs'" in str(e.value)


def test_unknown_nested_key(tmp_path):
    p = write(tmp_path, "prepare:\n  emulator:\n    treshold_sigma: 0.1\n")
    with pytest.raises(TmktError, match=r"prepare\.emulator\.treshold_sigma.*"
                                        r"prepare\.emulator\.threshold_sigma"):
        load_recipe(p)


def test_key_in_wrong_section_suggests_right_one(tmp_path):
    p = write(tmp_path, "model:\n  batch_size: 3\n")
    with pytest.raises(TmktError, match=r"'model\.batch_size'.*did you mean '(train|eval)\.batch_size'"):
        load_recipe(p)


@pytest.mark.parametrize("text,pattern", [
    ("train:\n  epochs: three\n", r"'train\.epochs': expected an integer, got 'three'"),
    ("train:\n  epochs: 2.5\n", r"'train\.epochs': expected an integer, got 2\.5"),
    ("train:\n  lr: -1.0\n", r"'train\.lr': expected a value > 0, got -1\.0"),
    ("prepare:\n  time_steps: 0\n", r"'prepare\.time_steps': expected a value >= 1, got 0"),
    ("prepare:\n  size: 0\n", r"'prepare\.size': expected a value >= 1, got 0"),
    ("data:\n  hflip: 1\n", r"'data\.hflip': expected true or false, got 1"),
    ("method:\n  name: tmk\n", r"'method\.name': expected one of .* got 'tmk'; did you mean "
                               r"'tmkt'"),
    ("data:\n  event_fraction: 1.5\n", r"'data\.event_fraction': expected a value <= 1"),
    ("train: 5\n", r"'train': expected a mapping"),
    ("cam:\n  samples: 3\n", r"'cam\.samples': expected a list"),
    ("train:\n  lr: .nan\n", r"'train\.lr': expected a finite number"),
])
def test_wrong_type_or_range(tmp_path, text, pattern):
    with pytest.raises(TmktError, match=pattern):
        load_recipe(write(tmp_path, text))


def test_float_from_yaml_string_exponent(tmp_path):
    # YAML 1.1 reads 1e-3 (no dot) as a string; tmkt accepts it for float keys.
    r = load_recipe(write(tmp_path, "train:\n  lr: 1e-3\n"))
    assert r.train.lr == pytest.approx(1e-3)


@pytest.mark.parametrize("text,pattern", [
    ("", r"is empty"),
    ("- a\n- b\n", r"expected a mapping of keys at the top, got list"),
    ("train: [1,\n", r"not valid YAML"),
])
def test_malformed_recipe_files(tmp_path, text, pattern):
    with pytest.raises(TmktError, match=pattern):
        load_recipe(write(tmp_path, text))


def test_missing_recipe_file(tmp_path):
    with pytest.raises(TmktError, match=r"recipe not found: .*nope\.yaml"):
        load_recipe(tmp_path / "nope.yaml")


def test_overrides(tmp_path):
    p = write(tmp_path, "train:\n  epochs: 3\n")
    r = load_recipe(p, ["train.epochs=7", "method.name=kt", "train.lr=2e-3",
                        "cam.samples=[1, 2]", "prepare.emulator.seed=5"])
    assert r.train.epochs == 7 and r.method.name == "kt" and r.train.lr == 2e-3
    assert r.cam.samples == [1, 2] and r.prepare.emulator.seed == 5
    # kt's defaults follow the overridden method name
    assert r.method.sliding_replacement is True and r.method.tsm is False


@pytest.mark.parametrize("override,pattern", [
    ("train.epochz=3", r"unknown recipe key 'train\.epochz'; did you mean 'train\.epochs'"),
    ("train.epochs", r"expected KEY=VALUE"),
    ("train..epochs=3", r"malformed"),
    ("train.epochs.x=3", r"'train\.epochs': expected an integer, got \{'x': 3\}"),
    ("train.batch_size=0", r"expected a value >= 1, got 0"),
])
def test_bad_overrides(override, pattern):
    with pytest.raises(TmktError, match=pattern):
        load_recipe(None, [override])


def test_override_below_a_value_is_refused(tmp_path):
    p = write(tmp_path, "train:\n  epochs: 3\n")
    with pytest.raises(TmktError, match=r"'train\.epochs' is not a section"):
        load_recipe(p, ["train.epochs.x=3"])


def test_a_mapping_for_a_section_merges_into_it(tmp_path):
    """``--set 'train={max_steps: 5}'`` is ``--set train.max_steps=5``: the recipe's other
    train keys stay (before, the section was replaced by its defaults without a word)."""
    p = write(tmp_path, "train:\n  epochs: 3\n  lr: 0.5\nprepare:\n  emulator:\n"
                        "    canvas: 40\n    seed: 7\n")
    merged = load_recipe(p, ["train={max_steps: 5}", "prepare={emulator: {seed: 9}}"])
    dotted = load_recipe(p, ["train.max_steps=5", "prepare.emulator.seed=9"])
    assert merged == dotted
    assert (merged.train.max_steps, merged.train.epochs, merged.train.lr) == (5, 3, 0.5)
    assert (merged.prepare.emulator.canvas, merged.prepare.emulator.seed) == (40, 9)
    assert merged.variant == dotted.variant
    # a section the recipe leaves out merges into the defaults
    assert load_recipe(p, ["cam={samples: [1]}"]).cam.samples == [1]


@pytest.mark.parametrize("override", ["train=null", "train=5", "train=[1, 2]",
                                      "prepare.emulator=", "model=digitsnet"])
def test_a_section_set_to_anything_but_a_mapping_is_refused(tmp_path, override):
    p = write(tmp_path, "train:\n  epochs: 3\n")
    key = override.split("=")[0]
    with pytest.raises(TmktError, match=rf"'{re.escape(key)}' is a section; set its keys "
                                        rf"\(--set {re.escape(key)}\.KEY=VALUE\)"):
        load_recipe(p, [override])


def test_explicit_switch_beats_method_default():
    r = load_recipe(None, ["method.name=tmkt", "method.mag=false"])
    assert r.method.mag is False and r.method.mrp is True


def test_base_recipe_merge(tmp_path):
    write(tmp_path, "train:\n  epochs: 3\n  lr: 0.5\n", "base.yaml")
    p = write(tmp_path, "base: base.yaml\ntrain:\n  lr: 0.25\n", "child.yaml")
    r = load_recipe(p)
    assert r.train.epochs == 3 and r.train.lr == 0.25
    assert r.name == f"{tmp_path.name}-child"


def test_base_loop_and_missing_base(tmp_path):
    write(tmp_path, "base: b.yaml\n", "a.yaml")
    write(tmp_path, "base: a.yaml\n", "b.yaml")
    with pytest.raises(TmktError, match="loops back"):
        load_recipe(tmp_path / "a.yaml")
    with pytest.raises(TmktError, match=r"'base'.*file not found"):
        load_recipe(write(tmp_path, "base: nowhere.yaml\n", "c.yaml"))


def test_name_must_be_plain():
    with pytest.raises(TmktError, match="plain folder name"):
        load_recipe(None, ["name=../escape"])


def test_stage_hash_ignores_volatile_and_other_sections():
    a = load_recipe(None)
    b = load_recipe(None, ["train.log_every_steps=99", "data.num_workers=3", "eval.batch_size=7",
                           "train.device=cpu"])
    c = load_recipe(None, ["train.epochs=99"])
    h = lambda r: config.config_hash(stage_config(r, "train-tmkt"))  # noqa: E731
    assert h(a) == h(b)
    assert h(a) != h(c)
    # a prepare-only change does not touch train-tmkt's own hash (it arrives as an input hash)
    d = load_recipe(None, ["prepare.size=32"])
    assert h(a) == h(d)


def test_every_field_has_help_text():
    missing = [key for key, _tp, _d, doc, _m in config.iter_fields() if not doc]
    assert missing == []


def test_require_path_names_key(tmp_path):
    with pytest.raises(TmktError, match=r"nothere: not found \(from recipe key 'prepare\.root'\)"):
        config.require_path(tmp_path / "nothere", "prepare.root")
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(TmktError, match="expected a folder"):
        config.require_path(f, "prepare.root", "dir")
    with pytest.raises(TmktError, match="is empty"):
        config.require_path("", "distill.teacher")


def test_dataset_and_stage_dirs():
    r = load_recipe(None, ["prepare.dataset=digits", "prepare.time_steps=8", "prepare.size=32",
                           "name=x", "seed=7"])
    assert r.dataset_dir() == Path("prepared/digits-T8-32px")
    assert r.stage_dir("train-tmkt") == Path("runs/x/seed7/train-tmkt")
    assert isinstance(Recipe(), Recipe)


def test_teacher_hash_ignores_the_event_fraction():
    h = lambda r, s: config.config_hash(stage_config(r, s))  # noqa: E731
    a, b = load_recipe(None), load_recipe(None, ["data.event_fraction=0.05"])
    assert h(a, "pretrain-ann") == h(b, "pretrain-ann")
    assert h(a, "distill") != h(b, "distill")


def test_a_key_added_later_leaves_the_hash_of_earlier_runs_alone():
    """model.conv_init and data.rotation_interpolation came after runs were made: at their
    defaults (what those runs computed) they are left out of the config hash, so the runs stay
    up to date; set to another value they are in it."""
    from tmkt_cli.config import config_hash, stage_config

    recipe = Path(__file__).resolve().parent.parent / "recipes" / "digits" / "tmkt.yaml"
    plain = stage_config(load_recipe(recipe), "train-tmkt")
    assert "conv_init" not in plain["model"] and "rotation_interpolation" not in plain["data"]
    for override in ("model.conv_init=torch_default", "data.rotation_interpolation=nearest"):
        changed = stage_config(load_recipe(recipe, [override]), "train-tmkt")
        assert config_hash(changed) != config_hash(plain), override
