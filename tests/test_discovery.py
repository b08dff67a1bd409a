"""What a new user reaches for first: --version, the shipped recipes by name from any folder,
`tmkt recipes`, `tmkt env`, help that reads well, and `tmkt prepare DATASET` making the store
the dataset's recipes read."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tmkt_cli import __version__
from tmkt_cli.cli import app
from tmkt_cli.config.catalog import resolve_recipe, shipped_recipes, shipped_recipes_dir
from tmkt_cli.errors import TmktError

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "100"})


def test_version():
    res = invoke("--version")
    assert res.exit_code == 0 and res.output.strip() == f"tmkt {__version__}"


def test_every_shipped_recipe_is_listed_and_resolves():
    found = {r.name: r for r in shipped_recipes()}
    on_disk = {f"{p.parent.name}/{p.stem}" for p in (REPO / "recipes").glob("*/*.yaml")
               if p.stem != "base"}
    assert set(found) == on_disk and "digits/tmkt" in found
    assert all(r.summary for r in found.values()), "every recipe starts with a comment"
    res = invoke("recipes")
    assert res.exit_code == 0
    for name in on_disk:
        assert name in res.output


@pytest.mark.parametrize("text", ["digits/tmkt", "digits/tmkt.yaml", "recipes/digits/tmkt"])
def test_recipe_by_name(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a folder with no recipes/ in it
    assert resolve_recipe(text) == shipped_recipes_dir() / "digits" / "tmkt.yaml"


def test_an_existing_path_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    own = tmp_path / "digits" / "tmkt.yaml"
    own.parent.mkdir()
    own.write_text("name: mine\n")
    assert resolve_recipe("digits/tmkt.yaml") == Path("digits/tmkt.yaml")


@pytest.mark.parametrize("text", ["digits/tmkt", "digits/tmkt.yaml", "./digits/tmkt"])
def test_a_local_recipe_wins_over_the_shipped_one_of_that_name(text, tmp_path, monkeypatch):
    """``./digits/tmkt.yaml`` in the current folder answers ``digits/tmkt``: the shipped
    recipe of that name never shadows it."""
    monkeypatch.chdir(tmp_path)
    own = tmp_path / "digits" / "tmkt.yaml"
    own.parent.mkdir()
    own.write_text("name: mine\nmethod:\n  name: kt\n")
    assert resolve_recipe(text).resolve() == own
    res = invoke("train-tmkt", text, "--show-recipe")
    assert res.exit_code == 0, res.output
    assert "name: mine" in res.output and "folder:  runs/mine/seed42/train-tmkt" in res.output


def test_unknown_recipe_name_is_one_line_with_a_suggestion(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TmktError, match="did you mean 'digits/tmkt'"):
        resolve_recipe("digits/tmk")
    res = invoke("train-tmkt", "digits/tmk", "--show-recipe")
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    with pytest.raises(TmktError, match="recipe not found"):
        resolve_recipe("../../etc/passwd")


def test_run_a_recipe_by_name_from_another_folder(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tmkt_cli", "train-tmkt", "digits/kt",
                           "--show-recipe"], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "name: digits-kt" in out and "name: kt" in out


def test_prepare_dataset_name_uses_its_recipes_settings():
    """`tmkt prepare digits -T 8 --size 32` makes the store recipes/digits/*.yaml read, so
    the README's chain (demo, then prepare, then train) is not refused."""
    res = invoke("prepare", "digits", "--time-steps", "8", "--size", "32", "--show-recipe")
    assert res.exit_code == 0, res.output
    assert "recordings_per_image: 3" in res.output
    assert "folder:  prepared/digits-T8-32px" in res.output
    from_recipe = invoke("prepare", "digits/tmkt", "--show-recipe")
    hashes = [re.search(r"config hash of prepare: (\w+)", r.output).group(1)
              for r in (res, from_recipe)]
    assert hashes[0] == hashes[1]
    # a dataset without shipped recipes starts from the schema's defaults
    res = invoke("prepare", "images", "--root", str(REPO), "--show-recipe")
    assert "recordings_per_image: 1" in res.output


def test_help_reads_well():
    # wide enough that rich wraps nothing: every line break left is one of the docstring's
    res = runner.invoke(app, ["--help"], env={"COLUMNS": "250"})
    assert res.exit_code == 0
    assert "<bool>" not in res.output, "flags take no value: no type column"
    assert "--install-completion" in res.output and "--version" in res.output
    # a docstring's line break does not split a sentence
    assert "with the paired images, in one HDF5 file" in res.output
    res = invoke("train-tmkt", "--help")
    assert "<bool>" not in res.output and "KEY=VALUE" in res.output


def test_env_reports_versions_and_devices():
    res = invoke("env")
    assert res.exit_code == 0, res.output
    for key in ("tmkt", "python", "torch", "spikingjelly", "tonic", "torch threads",
                "CUDA devices"):
        assert re.search(rf"^{re.escape(key)}\s", res.output, re.M), key


def test_the_wheel_carries_the_recipes(tmp_path):
    # built from a copy, so setuptools' build/ folder never lands in the checkout
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(REPO / "tmkt_cli", src / "tmkt_cli", symlinks=True, ignore=ignore)
    shutil.copytree(REPO / "recipes", src / "recipes")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-q", "-w", str(tmp_path), str(src)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {proc.stderr.strip()[-200:]}")
    wheel = next(tmp_path.glob("tmkt-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "tmkt_cli/recipes/digits/tmkt.yaml" in names
    assert "tmkt_cli/recipes/README.md" in names
