"""The command line: help, errors as one line with exit code 2, --debug, --dry-run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tmkt_cli.cli import app

runner = CliRunner()
COMMANDS = ["prepare", "pretrain-ann", "distill", "train-tmkt", "eval", "cam", "report",
            "recipe-doc", "export", "predict"]
REPO = Path(__file__).resolve().parent.parent


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_top_level_help_lists_every_stage():
    res = invoke("--help")
    assert res.exit_code == 0
    for cmd in COMMANDS:
        assert cmd in res.output


@pytest.mark.parametrize("cmd", COMMANDS)
def test_command_help(cmd):
    res = invoke(cmd, "--help")
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output and len(res.output) > 200


def test_help_imports_no_heavy_library():
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom tmkt_cli.cli import app\n"
            "for c in ['--help', 'train-tmkt --help', 'prepare --help', 'eval --help']:\n"
            "    r = CliRunner().invoke(app, c.split())\n"
            "    assert r.exit_code == 0, r.output\n"
            "heavy = [m for m in ('torch', 'spikingjelly', 'tonic', 'h5py') if m in sys.modules]\n"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_user_error_is_one_line_exit_2(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  epoch: 3\n")
    proc = subprocess.run([sys.executable, "-m", "tmkt_cli", "train-tmkt", str(recipe)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "unknown recipe key 'train.epoch'" in lines[0] and "Traceback" not in proc.stderr


def test_debug_shows_traceback(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  epoch: 3\n")
    proc = subprocess.run([sys.executable, "-m", "tmkt_cli", "train-tmkt", str(recipe),
                           "--debug"], capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "TmktError" in proc.stderr


def test_missing_recipe_file():
    res = invoke("train-tmkt", "no/such/recipe.yaml")
    assert res.exit_code == 2 and "recipe not found: no/such/recipe.yaml" in res.output


def test_bad_set_and_resume_values(tmp_path):
    res = invoke("train-tmkt", str(REPO / "recipes/digits/tmkt.yaml"), "--set", "train.lr=-1")
    assert res.exit_code == 2 and "'train.lr': expected a value > 0, got -1" in res.output
    res = invoke("train-tmkt", str(REPO / "recipes/digits/tmkt.yaml"), "--resume", "maybe")
    assert res.exit_code == 2 and "--resume: expected auto or never" in res.output


def test_dry_run_leads_with_the_plan_and_shows_the_recipe_on_request(tmp_path):
    args = ("train-tmkt", str(REPO / "recipes/digits/kt.yaml"),
            "--set", f"paths.runs={tmp_path}/runs", "--set", "train.epochs=3",
            "--set", f"paths.dataset={tmp_path}/prepared")
    plan = invoke(*args, "--dry-run")
    assert plan.exit_code == 0, plan.output
    assert plan.output.startswith("# plan") and "name: digits-kt" not in plan.output
    assert "--show-recipe" in plan.output.splitlines()[-1]
    assert len(plan.output.splitlines()) < 15
    res = invoke(*args, "--show-recipe")  # a dry run too
    assert res.exit_code == 0, res.output
    out = res.output
    assert out.index("# plan") < out.index("# resolved recipe")
    assert "name: digits-kt" in out and "epochs: 3" in out
    assert "sliding_replacement: true" in out  # kt's resolved default
    # a --set variant of the recipe gets its own folder (tmkt_cli/config/variants.py)
    assert "variant: train.epochs-3" in out
    assert "stage:   train-tmkt" in out and \
        f"{tmp_path}/runs/digits-kt/train.epochs-3/seed42/train-tmkt" in out
    assert "not ready" in out  # the dataset has not been prepared
    # the training memory estimate (tmkt_cli/train/memory.py), for both precisions
    assert "memory:  training step at batch 64" in out
    assert "  fp32: " in out and "  bf16: " in out and "x 2 stream(s)" in out
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


def test_prepare_unknown_dataset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = invoke("prepare", "mnits")
    assert res.exit_code == 2 and "unknown dataset 'mnits'" in res.output
    assert not (tmp_path / "prepared").exists()  # refused before any folder is made


def test_recipe_doc_is_current():
    res = invoke("recipe-doc")
    assert res.exit_code == 0
    assert "| `train.epochs` |" in res.output
    committed = (REPO / "docs" / "recipes.md").read_text()
    assert committed == res.output, "docs/recipes.md is stale: run `make docs`"


def _complete(words: str) -> list[str]:
    """What bash completion offers for the last word of ``words`` (Typer's protocol)."""
    res = CliRunner().invoke(app, [], prog_name="tmkt", env={
        "_TMKT_COMPLETE": "complete_bash", "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - 1), "_TYPER_COMPLETE_ARGS": words})
    return res.output.split()


def test_completion_offers_recipe_names_files_and_keys(tmp_path, monkeypatch):
    """Issue 29: completion covered commands and flags, not recipe names or keys."""
    assert {"digits/tmkt", "digits/tmkt-paper"} <= set(_complete("tmkt train-tmkt digits/tm"))
    assert "control/kt" in _complete("tmkt eval control/")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text("name: mine\n")
    (tmp_path / "notes.txt").write_text("")
    offered = _complete("tmkt train-tmkt mi")
    assert "mine.yaml" in offered and "notes.txt" not in _complete("tmkt train-tmkt no")
    assert _complete("tmkt train-tmkt digits/tmkt --set train.ep") == ["train.epochs="]
    assert "method.mix_ratio=" in _complete("tmkt train-tmkt digits/tmkt -s method.mi")


@pytest.mark.parametrize("args,message", [
    (["eval"], "tmkt eval: Missing argument 'RECIPE'."),
    (["eval", "x", "--bogus"], "tmkt eval: No such option: --bogus"),
    (["evaluate", "x"], "No such command 'evaluate'. Did you mean 'eval'?"),
    (["landscape", "x", "--grid", "1"], "tmkt landscape: Invalid value for '--grid'"),
    (["landscape", "x", "--samples", "0"], "tmkt landscape: Invalid value for '--samples'"),
])
def test_usage_errors_are_one_line_and_exit_2(args, message):
    """Issue 27: Click's own usage errors came in a framed box of several lines."""
    res = CliRunner().invoke(app, args, prog_name="tmkt")
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]


def test_tmkt_alone_still_prints_the_help():
    res = CliRunner().invoke(app, [], prog_name="tmkt")
    assert "Usage: tmkt" in res.output and "train-tmkt" in res.output
