"""Training loaders over dataset.h5: keys, pairing, augmentation, subsets, workers."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest
import torch

from tmkt_cli.config import DataConfig
from tmkt_cli.data.loaders import (
    EventDataset,
    ImageDataset,
    augment_planes,
    event_subset,
    static_from_image,
)
from tmkt_cli.data.sampling import KeyedBatchSampler
from tmkt_cli.data.store import FILENAME, DatasetWriter, SplitPlan, StoreHeader
from tmkt_cli.errors import TmktError

T, S = 4, 8
PLAIN = DataConfig(crop_padding=0, hflip=False, rotation=0.0)


def image_value(split: str, i: int) -> int:
    """Every image is flat grey with a value that identifies it."""
    return (10 if split == "train" else 150) + i


def frames_of(split: str, i: int) -> np.ndarray:
    rng = np.random.default_rng([7, split == "train", i])
    return rng.integers(0, 5, (T, 2, S, S)).astype(np.float32)


def make_dataset(folder, train_labels, test_labels, train_image_labels, test_image_labels,
                 train_image_index=None, test_image_index=None):
    plans = {}
    for split, labels, image_labels, image_index in (
            ("train", train_labels, train_image_labels, train_image_index),
            ("test", test_labels, test_image_labels, test_image_index)):
        n, m = len(labels), len(image_labels)
        plans[split] = SplitPlan(
            labels=np.asarray(labels), sources=[f"{split}{i}" for i in range(n)],
            image_index=np.full(n, -1) if image_index is None else np.asarray(image_index),
            image_labels=np.asarray(image_labels), image_sources=[f"i{i}" for i in range(m)])
    header = StoreHeader(dataset="toy", classes=["a", "b", "c"], time_steps=T, size=S,
                         split_by="time", prepare_config="", config_hash="h")
    path = folder / FILENAME
    with DatasetWriter(path, header, plans) as w:
        for split in ("train", "test"):
            for i in range(plans[split].images):
                w.add_image(split, np.full((S, S, 3), image_value(split, i), dtype=np.uint8))
            for i in range(plans[split].recordings):
                w.add_recording(split, frames_of(split, i), 100, 0, (S, S))
        w.finish()
    return path


@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    """12 train recordings (3 classes), 6 test; each recording has its own image."""
    train_labels = np.arange(12) % 3
    test_labels = np.arange(6) % 3
    return make_dataset(tmp_path_factory.mktemp("paired"), train_labels, test_labels,
                        train_labels, test_labels, np.arange(12), np.arange(6))


def identify(static: torch.Tensor, split: str) -> int:
    """Which image a static input came from (flat images, V channel)."""
    value = int(round(float(static[0, 0, 0]) * 255))
    assert torch.all(static == static[0, 0, 0])
    return value - (10 if split == "train" else 150)


def test_plain_sample_is_the_stored_recording(paired):
    ds = EventDataset(paired, "test", PLAIN, seed=0, augment=False, with_static=False)
    assert len(ds) == 6
    s = ds[4]
    assert s["events"].dtype == torch.float32 and s["events"].shape == (T, 2, S, S)
    np.testing.assert_array_equal(s["events"].numpy(), frames_of("test", 4))
    assert s["label"].dtype == torch.int64 and int(s["label"]) == 1 and s["index"] == 4
    assert "static" not in s


@pytest.mark.parametrize("split", ["train", "test"])
def test_class_partner_is_a_training_image_of_the_same_class(paired, split):
    ds = EventDataset(paired, split, PLAIN, seed=3, augment=False, with_static=True)
    train_image_labels = np.arange(12) % 3
    seen = set()
    for position in range(len(ds)):
        for sample_seed in range(8):
            s = ds[(position, sample_seed)]
            image_row = identify(s["static"], "train")  # always a TRAINING image
            assert image_row == s["static_index"]
            assert train_image_labels[image_row] == int(s["label"])
            seen.add((position, image_row))
    # redrawn per key: each sample meets several partners
    assert len(seen) > 2 * len(ds)


def test_instance_partner_is_the_recordings_own_image(paired):
    cfg = dataclasses.replace(PLAIN, pairing="instance")
    for split in ("train", "test"):
        ds = EventDataset(paired, split, cfg, seed=0, augment=False, with_static=True)
        for position in range(len(ds)):
            s = ds[(position, 12345)]
            assert s["static_index"] == position == identify(s["static"], split)


def test_pairing_errors(tmp_path):
    no_own = make_dataset(tmp_path / "a", [0, 1, 2], [0], [0, 1, 2], [0])
    with pytest.raises(TmktError, match=r"dataset.h5: data.pairing = instance.*pairing: class"):
        EventDataset(no_own, "train", dataclasses.replace(PLAIN, pairing="instance"), seed=0,
                     augment=False, with_static=True)
    lonely = make_dataset(tmp_path / "b", [0, 1, 2], [2], [0, 1], [2])
    with pytest.raises(TmktError, match=r"class\(es\) c have no training image"):
        EventDataset(lonely, "test", PLAIN, seed=0, augment=False, with_static=True)
    # without the static stream nothing needs a partner
    assert len(EventDataset(lonely, "test", PLAIN, seed=0, augment=False,
                            with_static=False)) == 1


def test_same_key_same_sample_and_keys_differ(paired):
    cfg = DataConfig(crop_padding=2, hflip=True, rotation=20.0)
    ds = EventDataset(paired, "train", cfg, seed=5, augment=True, with_static=True)
    a, b = ds[(3, 99)], ds[(3, 99)]
    assert torch.equal(a["events"], b["events"]) and torch.equal(a["static"], b["static"])
    assert a["static_index"] == b["static_index"]
    others = [ds[(3, seed)]["events"] for seed in range(100, 106)]
    assert any(not torch.equal(a["events"], o) for o in others)
    # a plain int key is (index, index)
    assert torch.equal(ds[7]["events"], ds[(7, 7)]["events"])
    # the recipe seed enters every draw
    other_seed = EventDataset(paired, "train", cfg, seed=6, augment=True, with_static=True)
    assert any(not torch.equal(ds[(i, 1)]["events"], other_seed[(i, 1)]["events"])
               for i in range(6))


def test_augmentation_is_the_same_for_every_frame():
    plane = np.random.default_rng(0).random((S, S)).astype(np.float32)
    planes = np.broadcast_to(plane, (T, 2, S, S)).copy()
    for seed in range(10):
        out = augment_planes(planes, np.random.default_rng(seed), crop_padding=3, hflip=True,
                             rotation=30.0)
        assert out.shape == planes.shape and out.dtype == np.float32
        assert all(np.array_equal(out[0, 0], out[t, c]) for t in range(T) for c in range(2))
    # with everything off it is the identity
    same = augment_planes(planes, np.random.default_rng(0), crop_padding=0, hflip=False,
                          rotation=0.0)
    np.testing.assert_array_equal(same, planes)


def test_crop_flip_rotation_do_what_they_say():
    planes = np.zeros((1, 1, 5, 5), dtype=np.float32)
    planes[0, 0, 2, 2] = 1.0
    shifted = {tuple(np.argwhere(augment_planes(planes, np.random.default_rng(s),
                                                crop_padding=1, hflip=False,
                                                rotation=0.0)[0, 0])[0]) for s in range(40)}
    assert shifted == {(r, c) for r in (1, 2, 3) for c in (1, 2, 3)}
    edge = np.zeros((1, 1, 3, 4), dtype=np.float32)
    edge[0, 0, 0, 0] = 1.0
    flips = [augment_planes(edge, np.random.default_rng(s), crop_padding=0, hflip=True,
                            rotation=0.0)[0, 0] for s in range(20)]
    assert any(f[0, 3] == 1.0 for f in flips) and any(f[0, 0] == 1.0 for f in flips)
    # a centred disc survives any rotation nearly unchanged; mass is kept inside the frame
    yy, xx = np.mgrid[:9, :9]
    disc = ((yy - 4) ** 2 + (xx - 4) ** 2 <= 4).astype(np.float32)[None, None]
    rotated = augment_planes(disc, np.random.default_rng(1), crop_padding=0, hflip=False,
                             rotation=90.0)
    assert abs(rotated.sum() - disc.sum()) < 0.1 * disc.sum()


def test_static_conversion():
    img = np.zeros((2, 2, 3), dtype=np.uint8)
    img[0, 0] = (255, 0, 0)
    img[1, 1] = (0, 0, 51)
    v = static_from_image(img, "v")
    assert v.shape == (2, 2, 2) and v.dtype == np.float32
    assert v[0, 0, 0] == 1.0 and v[1, 1, 1] == pytest.approx(0.2) and v[0, 0, 1] == 0.0
    grey = static_from_image(img, "grey")
    assert grey[0, 0, 0] == pytest.approx(0.299) and grey[1, 1, 1] == pytest.approx(0.2 * 0.114)
    np.testing.assert_array_equal(v[0], v[1])


def test_indices_are_positions_and_index_is_the_row(paired):
    rows = [2, 5, 11]
    ds = EventDataset(paired, "train", PLAIN, seed=0, augment=False, with_static=False,
                      indices=rows)
    assert len(ds) == 3 and list(ds.labels) == [2, 2, 2]
    s = ds[1]
    assert s["index"] == 5
    np.testing.assert_array_equal(s["events"].numpy(), frames_of("train", 5))


def test_in_memory_gives_the_same_samples(paired):
    cfg = DataConfig(crop_padding=2, rotation=10.0)
    lazy = EventDataset(paired, "train", cfg, seed=1, augment=True, with_static=True)
    memory = EventDataset(paired, "train", dataclasses.replace(cfg, in_memory=True), seed=1,
                          augment=True, with_static=True)
    for key in [(0, 1), (5, 2), (11, 3)]:
        a, b = lazy[key], memory[key]
        assert torch.equal(a["events"], b["events"]) and torch.equal(a["static"], b["static"])


@pytest.mark.parametrize("pairing", ["class", "instance"])
def test_in_memory_reads_only_the_rows_used(paired, pairing):
    """A subset in any order: the same samples as the lazy reader, holding just its rows
    (and, for instance pairing, just its partners' images)."""
    cfg = DataConfig(crop_padding=2, pairing=pairing)
    rows = np.array([7, 2, 5])
    lazy = EventDataset(paired, "train", cfg, seed=1, augment=True, with_static=True,
                        indices=rows)
    memory = EventDataset(paired, "train", dataclasses.replace(cfg, in_memory=True), seed=1,
                          augment=True, with_static=True, indices=rows)
    assert memory._frames.shape[0] == 3
    if pairing == "instance":
        assert memory._images.shape[0] == len(np.unique(memory.partner_image_index))
    for key in [(0, 1), (1, 2), (2, 3)]:
        a, b = lazy[key], memory[key]
        assert a["index"] == b["index"]
        assert torch.equal(a["events"], b["events"]) and torch.equal(a["static"], b["static"])
    images = ImageDataset(paired, "train", dataclasses.replace(cfg, in_memory=True),
                          indices=np.array([3, 0]))
    plain = ImageDataset(paired, "train", cfg, indices=np.array([3, 0]))
    assert images._images.shape[0] == 2
    assert all(torch.equal(images[i]["image"], plain[i]["image"]) for i in range(2))


def test_dataloader_workers_give_the_same_batches(paired):
    cfg = DataConfig(crop_padding=2, rotation=15.0)
    ds = EventDataset(paired, "train", cfg, seed=2, augment=True, with_static=True)
    ds[0]  # the parent holds an open handle before the workers fork

    def batches(workers):
        sampler = KeyedBatchSampler(np.arange(len(ds)), 4, seed=2, epoch=1)
        loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=workers)
        return list(loader)

    for a, b in zip(batches(0), batches(2), strict=True):
        for key in ("events", "static", "label", "index", "static_index"):
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), key


def test_event_subset_is_stratified_and_seeded():
    labels = np.repeat([0, 1, 2, 3], [50, 20, 7, 1])
    sub = event_subset(labels, 0.1, seed=4)
    assert (np.diff(sub) > 0).all()
    assert np.bincount(labels[sub], minlength=4).tolist() == [5, 2, 1, 1]  # >= 1 per class
    np.testing.assert_array_equal(sub, event_subset(labels, 0.1, seed=4))
    assert not np.array_equal(sub, event_subset(labels, 0.1, seed=5))
    np.testing.assert_array_equal(event_subset(labels, 1.0, seed=0), np.arange(labels.size))
    assert event_subset(labels, 0.5, 0).size == 25 + 10 + 4 + 1
    with pytest.raises(TmktError, match="data.event_fraction"):
        event_subset(labels, 0.0, 0)


def test_nested_subsets_grow_by_adding_recordings_and_independent_ones_redraw():
    labels = np.repeat(np.arange(5), 200)
    fractions = (0.005, 0.01, 0.05, 0.2, 1.0)
    nested = [set(event_subset(labels, f, seed=42)) for f in fractions]
    assert all(small < large for small, large in zip(nested, nested[1:], strict=False))
    assert [len(s) for s in nested] == [5, 10, 50, 200, 1000]
    independent = [set(event_subset(labels, f, 42, draw="independent")) for f in fractions]
    assert not independent[1] <= independent[2]  # the draw the switch keeps, for old runs
    with pytest.raises(TmktError, match="data.subset_draw"):
        event_subset(labels, 0.5, 0, draw="sometimes")


def test_image_dataset(paired):
    ds = ImageDataset(paired, "test", dataclasses.replace(PLAIN, static_input="grey"))
    assert len(ds) == 6
    s = ds[3]
    assert s["image"].shape == (2, S, S) and int(s["label"]) == 0 and s["index"] == 3
    assert float(s["image"][0, 0, 0]) == pytest.approx(image_value("test", 3) / 255, abs=1e-6)
    aug = ImageDataset(paired, "train", DataConfig(rotation=10), seed=1, augment=True)
    assert torch.equal(aug[(2, 9)]["image"], aug[(2, 9)]["image"])


def test_a_damaged_chunk_is_a_clear_error(tmp_path):
    path = make_dataset(tmp_path, [0, 1], [0], [0, 1], [0])
    with h5py.File(path, "r") as f:
        info = f["train"]["frames"].id.get_chunk_info(1)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + 10)
        fh.write(b"\xff\x00\xff\x00")
    ds = EventDataset(path, "train", PLAIN, seed=0, augment=False, with_static=False)
    ds[0]
    with pytest.raises(TmktError, match=r"dataset.h5: cannot read /train/frames\[1\]"):
        ds[1]
