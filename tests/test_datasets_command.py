"""`tmkt datasets`: every dataset prepare reads, what its raw folder must hold, and whether it
is found under --root (ROOT/<name> first, then ROOT)."""

from __future__ import annotations

from pathlib import Path

from test_recorded_sources import ncaltech_files, write_tree
from typer.testing import CliRunner

from tmkt_cli.cli import app
from tmkt_cli.data import sources
from tmkt_cli.stages.datasets import overview


def test_every_registered_dataset_is_listed_with_its_layout():
    listed = {d.name: d for d in overview(None)}
    assert set(listed) == set(sources.names())
    assert listed["digits"].status.startswith("built in: 1438 train and 359 test images")
    assert "Caltech101/<class>/*.bin" in listed["ncaltech101"].needs
    assert listed["ncaltech101"].status == "give --root FOLDER to check"


def test_found_under_root_and_not_found(tmp_path: Path):
    recordings, images = ncaltech_files()
    write_tree(tmp_path / "ncaltech101", {**recordings, **images})
    listed = {d.name: d for d in overview(tmp_path)}
    assert listed["ncaltech101"].status == "found: 16 train and 2 test recordings, 3 classes"
    assert listed["ncaltech101"].root == tmp_path / "ncaltech101"
    assert listed["nmnist"].status.startswith("not found: nmnist: no Train/ folder")
    res = CliRunner().invoke(app, ["datasets", "--root", str(tmp_path)],
                             env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "found: 16 train and 2 test recordings" in res.output


def test_piped_output_is_readable_at_80_columns_and_cuts_nothing():
    """Issue 29: piped, or under 120 columns, the layout column was cut with an ellipsis."""
    res = CliRunner().invoke(app, ["datasets"])  # CliRunner's output is not a terminal
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert max(map(len, lines)) <= 80 and "…" not in res.output
    text = " ".join(line.strip() for line in lines)
    for d in overview(None):  # every layout is there whole, however wrapped
        assert " ".join(d.needs.split()) in text, d.name
