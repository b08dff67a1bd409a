"""tmkt cam: Grad-CAM and SAM maths by hand, map shapes and normalisation on a real SNN, and
the stage end to end (figure, raw maps, a baseline, sample choice, errors)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tmkt_cli.analysis.cam import (
    class_activation_maps,
    gradcam,
    integrate_events,
    neuronal_contribution_scores,
    normalise_maps,
    resize_maps,
    spike_activation_maps,
)
from tmkt_cli.errors import TmktError
from tmkt_cli.runs.artifacts import read_manifest

sys.path.insert(0, str(Path(__file__).parent))
from test_eval import (  # noqa: E402
    SIZE,
    T,
    assert_png,
    calibrated,
    fake_training_run,
    make_prepared_dataset,
    toy_recipe,
)


def test_gradcam_by_hand():
    # T=2, B=1, C=2 channels, a 1x2 map
    acts = torch.tensor([[[[[1.0, 0.0]], [[0.0, 1.0]]]],
                         [[[[1.0, 1.0]], [[0.0, 0.0]]]]])
    grads = torch.tensor([[[[[2.0, 2.0]], [[-1.0, -1.0]]]],
                          [[[[0.0, 0.0]], [[-1.0, -1.0]]]]])
    # alpha = mean over t and space: channel 0 -> 1.0, channel 1 -> -1.0
    # time-mean activations: channel 0 [1, 0.5], channel 1 [0, 0.5]
    # map = relu(1*[1, 0.5] - 1*[0, 0.5]) = [1, 0]
    assert gradcam(acts, grads).tolist() == [[[1.0, 0.0]]]
    with pytest.raises(ValueError):
        gradcam(acts[0], grads[0])


def test_sam_by_hand():
    gamma = math.log(2)  # exp(-gamma) = 1/2
    spikes = torch.tensor([1.0, 0.0, 1.0, 1.0]).view(4, 1, 1, 1, 1)
    ncs = neuronal_contribution_scores(spikes, gamma).flatten().tolist()
    # earlier spikes only: t=1: 1/2; t=2: 1/4; t=3: spikes at 0 and 2 -> 1/8 + 1/2
    assert ncs == pytest.approx([0.0, 0.5, 0.25, 0.625])
    # the map counts a neuron only when it fires at t
    assert spike_activation_maps(spikes, gamma).flatten().tolist() == pytest.approx(
        [0.0, 0.0, 0.25, 0.625])
    # channels add up
    two = torch.cat([spikes, spikes], dim=2)
    assert spike_activation_maps(two, gamma).flatten().tolist() == pytest.approx(
        [0.0, 0.0, 0.5, 1.25])


def test_normalise_and_resize():
    maps = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[4.0, 4.0], [4.0, 4.0]]])
    out = normalise_maps(maps)
    assert out[0].tolist() == [[0.0, 0.5], [0.25, 1.0]]
    assert out[1].tolist() == [[0.0, 0.0], [0.0, 0.0]]  # constant: nothing to show
    big = resize_maps(maps, (6, 8))
    assert big.shape == (2, 6, 8) and torch.allclose(big[1], torch.full((6, 8), 4.0))
    rgb = integrate_events(np.ones((3, 2, 5, 4)))
    assert rgb.shape == (5, 4, 3) and rgb.min() >= 0 and rgb.max() <= 1


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("cam")
    make_prepared_dataset(tmp / "prepared")
    fake_training_run(toy_recipe(tmp))
    fake_training_run(toy_recipe(tmp, "toy-kt"), torch_seed=1)
    return tmp


@pytest.mark.parametrize("kind", ["gradcam", "sam"])
def test_maps_of_an_snn_are_normalised(world, kind):
    from tmkt_cli.data.loaders import EventDataset
    from tmkt_cli.models import build_snn

    recipe = toy_recipe(world)
    h5 = world / "prepared" / "dataset.h5"
    torch.manual_seed(0)
    model = calibrated(build_snn(recipe.model, 3, SIZE, T), h5, recipe)
    test = EventDataset(h5, "test", recipe.data, seed=0, augment=False, with_static=False)
    x = torch.stack([test[i]["events"] for i in range(3)]).transpose(0, 1)
    targets = torch.tensor([0, 1, 2])
    layer = model.trunk.layers.lif3
    maps = class_activation_maps(model, x, targets, layer, kind)
    assert maps.maps.shape == (3, SIZE, SIZE) and maps.maps.dtype == np.float32
    assert maps.maps.min() >= 0 and maps.maps.max() <= 1
    assert np.allclose(maps.maps.max(axis=(1, 2)), 1.0)  # each map spans [0, 1]
    assert maps.predictions.shape == (3,)
    if kind == "sam":
        assert maps.per_step.shape == (3, T, SIZE, SIZE)
    # the model is left at rest, in eval mode, with no hook attached
    assert all(not m._forward_hooks for m in model.modules())
    assert not model.training


def test_cam_stage_with_baseline_and_classes(world):
    from rich.console import Console

    from tmkt_cli.stages import cam
    from tmkt_cli.stages.common import execute

    baseline = world / "runs" / "toy-kt" / "seed42" / "train-tmkt"
    recipe = toy_recipe(world, "toy-tmkt", f"cam.baseline={baseline}",
                        "cam.classes=[two, zero]")
    console = Console(record=True, width=120)
    execute("cam", recipe, cam.folder(recipe), cam.inputs, cam.run, console)
    folder = cam.folder(recipe)
    with np.load(folder / "maps.npz") as z:
        data = {k: z[k] for k in z.files}
    # the first test sample of each class asked for (test labels are 0, 1, 2, 0, 1, 2)
    assert data["indices"].tolist() == [2, 0] and data["labels"].tolist() == [2, 0]
    for key in ("maps", "baseline_maps"):
        assert data[key].shape == (2, SIZE, SIZE)
        assert data[key].min() >= 0 and data[key].max() <= 1
    assert data["events"].shape == (2, T, 2, SIZE, SIZE)
    assert data["static"].shape == (2, SIZE, SIZE) and data["has_static"].all()
    assert data["static_kind"].tolist() == ["own", "own"]
    assert str(data["kind"]) == "gradcam" and str(data["layer"]) == "trunk.layers.lif3"
    assert str(data["baseline_label"]).startswith("toy-kt")
    assert not np.allclose(data["maps"], data["baseline_maps"])  # two different networks
    pixels = assert_png(folder / "cam.png")
    single = assert_png(folder / "cam-2.png")
    assert pixels.shape[0] > single.shape[0]  # two rows against one
    manifest = read_manifest(folder)
    assert manifest["status"] == "complete"
    assert set(manifest["inputs"]) == {"dataset", "model", "baseline"}
    assert manifest["inputs"]["model"]["path"].endswith("train-tmkt/last.pt")
    assert set(manifest["outputs"]) == {"maps", "figure", "sample_2", "sample_0"}
    assert "baseline predicts" in console.export_text()


def test_cam_stage_sam_by_samples(world):
    from rich.console import Console

    from tmkt_cli.stages import cam
    from tmkt_cli.stages.common import execute

    recipe = toy_recipe(world, "toy-kt", "cam.kind=sam", "cam.samples=[1]",
                        "cam.layer=trunk.layers.lif2", "cam.checkpoint=best")
    execute("cam", recipe, cam.folder(recipe), cam.inputs, cam.run, Console(quiet=True))
    with np.load(cam.folder(recipe) / "maps.npz") as z:
        assert z["maps_per_step"].shape == (1, T, SIZE, SIZE)
        assert str(z["layer"]) == "trunk.layers.lif2" and "baseline_maps" not in z.files
    assert read_manifest(cam.folder(recipe))["inputs"]["model"]["path"].endswith("best.pt")


@pytest.mark.parametrize("override,message", [
    ("cam.classes=[tow]", "recipe key 'cam.classes': .* has no class 'tow'; did you mean "
                          "'two'\\?"),
    ("cam.samples=[6]", "recipe key 'cam.samples': index 6 is outside the test split"),
    ("cam.layer=trunk.nothing", "recipe key 'cam.layer': .* has no layer 'trunk.nothing'"),
    ("cam.layer=trunk.layers.flatten", "recipe key 'cam.layer': the output of "
                                       "'trunk.layers.flatten'"),
])
def test_cam_user_errors(world, override, message):
    from rich.console import Console

    from tmkt_cli.stages import cam
    from tmkt_cli.stages.common import execute

    recipe = toy_recipe(world, "toy-tmkt", override)
    folder = world / f"cam-{override.split('=')[0]}-{len(override)}"
    with pytest.raises(TmktError, match=message):
        execute("cam", recipe, folder, cam.inputs, cam.run, Console(quiet=True))
    if "cam.layer" not in override:  # sample choices are checked before any folder is made
        assert not folder.exists()


def test_cam_of_an_ann_source_is_refused(world):
    from tmkt_cli.stages import cam

    recipe = toy_recipe(world, "toy-tmkt", "eval.source=pretrain-ann")
    with pytest.raises(TmktError, match="cam.source' is empty and eval.source is "
                                        "'pretrain-ann'"):
        cam.inputs(recipe)


def test_choose_samples_reads_numbers_as_class_names():
    from tmkt_cli.stages.cam import choose_samples

    labels = np.array([1, 0, 2, 1, 0])
    names = ["0", "1", "2"]
    assert choose_samples(labels, names, [], [2, "1", 0], Path("d.h5")) == [2, 0, 1]
    assert choose_samples(labels, names, [4, 0], [], Path("d.h5")) == [4, 0]
    with pytest.raises(TmktError, match="index -1 is outside"):
        choose_samples(labels, names, [-1], [], Path("d.h5"))


def test_automatic_choice_spreads_classes_and_shows_right_and_wrong():
    """With cam.samples and cam.classes empty: up to max_classes classes spread over the
    dataset, for each the first right and the first wrong prediction where both exist."""
    import torch

    from tmkt_cli.stages.cam import automatic_positions, spread_classes

    assert spread_classes(101, 10) == [0, 11, 22, 33, 44, 56, 67, 78, 89, 100]
    assert spread_classes(4, 10) == [0, 1, 2, 3]
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 3])
    # a fake model: predicts each sample's "events" value as its class
    guesses = {0: 0, 1: 1, 2: 1, 3: 0, 4: 1, 5: 2, 6: 2, 7: 0}
    test = {i: {"events": torch.full((2, 1), float(g))} for i, g in guesses.items()}

    def predict(x):  # x: [T, B, 1]
        return torch.nn.functional.one_hot(x[0, :, 0].long(), 4).float()
    chosen = automatic_positions(predict, labels, test, max_classes=10, batch_size=3)
    # class 0: 0 right, 1 wrong; class 1: 2 right, 3 wrong (4 not needed); class 2: only
    # right (5 first); class 3: only wrong (7)
    assert chosen == [0, 1, 2, 3, 5, 7]
    assert automatic_positions(predict, labels, test, max_classes=2, batch_size=8) == [0, 1, 7]


def test_cam_stage_chooses_samples_itself(world):
    """No cam.samples, no cam.classes: the stage picks, per class, a right and a wrong
    prediction of the model under study, and the captions say which is which."""
    from rich.console import Console

    from tmkt_cli.stages import cam
    from tmkt_cli.stages.common import execute

    recipe = toy_recipe(world, "toy-tmkt", "cam.max_classes=2")
    # force: another test drew maps of the same run with other cam settings
    execute("cam", recipe, cam.folder(recipe), cam.inputs, cam.run, Console(quiet=True),
            force=True)
    with np.load(cam.folder(recipe) / "maps.npz") as z:
        labels, predictions = z["labels"], z["predictions"]
    # two classes spread over three: 0 and 2; per class at most one right and one wrong
    assert set(labels.tolist()) <= {0, 2} and 1 <= len(labels) <= 4
    for c in (0, 2):
        outcomes = (predictions[labels == c] == c).tolist()
        assert len(outcomes) == len(set(outcomes))
    assert_png(cam.folder(recipe) / "cam.png")


def test_cam_takes_a_run_folder_or_its_checkpoint_as_eval_does(world, tmp_path):
    """`tmkt cam RUN` and `tmkt cam RUN/best.pt` as `tmkt eval` takes them: the recipe comes
    from the run folder, the maps go beside the run."""
    import shutil

    from typer.testing import CliRunner

    from tmkt_cli.cli import app

    run = tmp_path / "copied" / "seed42" / "train-tmkt"
    shutil.copytree(toy_recipe(world).stage_dir("train-tmkt"), run)
    res = CliRunner().invoke(app, ["cam", str(run), "--set", "cam.samples=[0]"])
    assert res.exit_code == 0, res.output
    manifest = read_manifest(run.parent / "cam")
    assert manifest["status"] == "complete"
    assert manifest["inputs"]["model"]["path"].endswith("last.pt")
    # one cam folder per run: another checkpoint replaces it with --force
    res = CliRunner().invoke(app, ["cam", str(run / "best.pt"), "--set", "cam.samples=[0]",
                                   "--force"])
    assert res.exit_code == 0, res.output
    assert read_manifest(run.parent / "cam")["inputs"]["model"]["path"].endswith("best.pt")
    if not (run / "best_test.pt").exists():
        shutil.copy(run / "best.pt", run / "best_test.pt")
    res = CliRunner().invoke(app, ["cam", str(run / "best_test.pt")])
    assert res.exit_code == 2 and "cam reads last.pt, model.pt or best.pt" in res.output
