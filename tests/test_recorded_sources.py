"""Archives read in place, and the recorded-dataset sources on tiny fake trees written in the
real formats: classes, splits, pairing, the N-Caltech101 class mapping, and the errors a user
gets for a wrong root."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import event_writers as writers

from tmkt_cli.data import archives, sources
from tmkt_cli.data import formats as ev
from tmkt_cli.data.archives import FileRef
from tmkt_cli.data.datasets import cepdvs, cifar10dvs, dvsgesture, ncaltech101, nmnist, recorded
from tmkt_cli.errors import TmktError


@pytest.fixture(autouse=True)
def _fresh_archive_cache():
    yield
    archives.clear_cache()


def tagged_events(tag: int, n: int = 5, size: int = 30) -> np.ndarray:
    """A recording whose x coordinates all equal ``tag``, so a test can tell recordings apart
    after loading them."""
    return ev.make_events(np.arange(n) * 1000, np.full(n, tag), np.arange(n) % size,
                          np.arange(n) % 2)


def png_bytes(value: int, size: int = 6, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    image = Image.new(mode, (size, size), (value, value, value) if mode == "RGB" else value)
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), value).save(buffer, format="JPEG")
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes], stored: bool = False) -> bytes:
    buffer = io.BytesIO()
    method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def tar_bytes(members: dict[str, bytes], gz: bool = True) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


# --------------------------------------------------------------------------------------------
# Archives
# --------------------------------------------------------------------------------------------

def test_archives_read_members_in_place(tmp_path):
    members = {"a/one.bin": b"1" * 10, "a/b/two.bin": b"2" * 20}
    (tmp_path / "plain.zip").write_bytes(zip_bytes(members))
    (tmp_path / "plain.tar").write_bytes(tar_bytes(members, gz=False))
    (tmp_path / "packed.tar.gz").write_bytes(tar_bytes(members))
    # nested the way the real releases are: zip in zip (stored and deflated), tar.gz in zip
    (tmp_path / "outer_stored.zip").write_bytes(zip_bytes({"inner.zip": zip_bytes(members)},
                                                          stored=True))
    (tmp_path / "outer_deflated.zip").write_bytes(zip_bytes({"inner.zip": zip_bytes(members)}))
    (tmp_path / "caltech.zip").write_bytes(zip_bytes({"c/inner.tar.gz": tar_bytes(members)}))
    before = files_under(tmp_path)

    cases = [("plain.zip", ()), ("plain.tar", ()), ("packed.tar.gz", ()),
             ("outer_stored.zip", ("inner.zip",)), ("outer_deflated.zip", ("inner.zip",)),
             ("caltech.zip", ("c/inner.tar.gz",))]
    for name, inner in cases:
        path = tmp_path / name
        assert sorted(archives.list_members(path, inner)) == sorted(members), name
        for member, data in members.items():
            assert archives.read_member(path, member, inner) == data, (name, member)
            assert FileRef(str(path), (*inner, member)).read_bytes() == data
    assert files_under(tmp_path) == before  # nothing was extracted


@pytest.mark.parametrize("evil", ["../escape.bin", "/etc/passwd", "a/../../up.bin",
                                  "C:/windows.bin"])
def test_archives_refuse_escaping_member_names(tmp_path, evil):
    for name, data in (("evil.zip", zip_bytes({"ok.bin": b"1", evil: b"2"})),
                       ("evil.tar", tar_bytes({"ok.bin": b"1", evil: b"2"}, gz=False))):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(TmktError, match="refusing member") as error:
            archives.list_members(path)
        assert str(path) in str(error.value)

    good = tmp_path / "good.zip"
    good.write_bytes(zip_bytes({"ok.bin": b"1"}))
    with pytest.raises(TmktError, match="refusing member"):
        archives.read_member(good, "../ok.bin")


def test_archives_damaged_or_missing(tmp_path):
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(TmktError) as error:
        archives.list_members(damaged)
    assert str(damaged) in str(error.value)
    with pytest.raises(TmktError, match="not found"):
        archives.list_members(tmp_path / "absent.zip")


# --------------------------------------------------------------------------------------------
# N-Caltech101
# --------------------------------------------------------------------------------------------

# class -> number of recordings (and images); 10 -> 9/1, 5 -> round(4.5) = 4 (half to even)
NCALTECH_COUNTS = {"BACKGROUND_Google": 10, "Faces_easy": 5, "accordion": 3}


def ncaltech_files() -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(recordings under Caltech101/, images under 101_ObjectCategories/) with a stock
    Caltech101 'Faces' folder that has no recordings. The tag of a recording and the grey
    value of its image both encode (class, number), so pairing can be checked after loading."""
    recordings, images = {}, {}
    for c, (name, count) in enumerate(NCALTECH_COUNTS.items()):
        for k in range(1, count + 1):
            tag = 10 * c + k
            recordings[f"Caltech101/{name}/image_{k:04d}.bin"] = writers.encode_atis_bin(
                tagged_events(tag))
            images[f"101_ObjectCategories/{name}/image_{k:04d}.jpg"] = jpeg_bytes(4 * tag)
    for k in range(1, 3):
        images[f"101_ObjectCategories/Faces/image_{k:04d}.jpg"] = jpeg_bytes(200)
    return recordings, images


def check_ncaltech(data: sources.SourceData) -> None:
    assert data.classes == ["BACKGROUND_Google", "Faces_easy", "accordion"]
    assert data.info["image_classes_dropped"] == ["Faces"]
    counts = {name: (0, 0) for name in data.classes}
    for split_index, split in enumerate((data.train, data.test)):
        for recording in split:
            name = data.classes[recording.label]
            pair = list(counts[name])
            pair[split_index] += 1
            counts[name] = tuple(pair)
    assert counts == {"BACKGROUND_Google": (9, 1), "Faces_easy": (4, 1), "accordion": (3, 0)}
    assert len(data.train_images) == 16 and len(data.test_images) == 2
    assert data.info["instance_pairing"].startswith("by file name")

    # first 90% by sorted name: image_0010 is BACKGROUND_Google's test recording
    assert [r.source.rsplit("/", 1)[-1] for r in data.test] == ["image_0010.bin",
                                                                "image_0005.bin"]
    for split, images in ((data.train, data.train_images), (data.test, data.test_images)):
        for recording in split:
            events, size = recording.load()
            tag = int(events["x"][0])
            image = images[recording.image_index]
            assert image.label == recording.label
            pixel = int(image.load()[0, 0, 0])
            assert abs(pixel - 4 * tag) <= 3  # JPEG is lossy
            assert size == (5, tag + 1)  # largest coordinates + 1, origin kept


def test_ncaltech101_from_folders(tmp_path):
    recordings, images = ncaltech_files()
    write_tree(tmp_path, {**recordings, **images})
    data = sources.get("ncaltech101")(tmp_path, None)
    check_ncaltech(data)
    assert data.train[0].source == "Caltech101/BACKGROUND_Google/image_0001.bin"
    rgb = data.train_images[0].load()
    assert rgb.dtype == np.uint8 and rgb.shape == (8, 8, 3)  # grey JPEG -> RGB


def test_ncaltech101_from_the_original_archives(tmp_path):
    recordings, images = ncaltech_files()
    inner = zip_bytes(recordings, stored=True)
    annotations = zip_bytes({"Caltech101_annotations/accordion/annotation_0001.bin": b"x" * 5})
    # The Mendeley archive holds Caltech101.zip and an annotations zip that must be ignored.
    (tmp_path / "N-Caltech101-archive.zip").write_bytes(zip_bytes(
        {"Caltech101.zip": inner, "Caltech101_annotations.zip": annotations}))
    (tmp_path / "101_ObjectCategories.tar.gz").write_bytes(tar_bytes(images))
    before = files_under(tmp_path)
    data = ncaltech101.ncaltech101(tmp_path)
    check_ncaltech(data)
    assert data.train[0].source == ("N-Caltech101-archive.zip!Caltech101.zip!"
                                    "Caltech101/BACKGROUND_Google/image_0001.bin")
    # loaders travel to worker processes
    restored = pickle.loads(pickle.dumps(data.test[0].load))
    np.testing.assert_array_equal(restored()[0], data.test[0].load()[0])
    assert files_under(tmp_path) == before


def _call(loader):
    return loader()[0]


def test_loaders_run_in_forked_workers_after_the_parent_read_the_archive(tmp_path):
    import multiprocessing

    recordings, images = ncaltech_files()
    (tmp_path / "Caltech101.zip").write_bytes(zip_bytes(recordings))
    (tmp_path / "101_ObjectCategories.tar.gz").write_bytes(tar_bytes(images))
    data = ncaltech101.ncaltech101(tmp_path)
    loaders = [r.load for r in data.train]
    expected = [_call(load) for load in loaders]  # the parent now holds open archives
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = pool.map(_call, loaders)
    for ours, theirs in zip(results, expected, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_ncaltech101_errors_name_the_problem(tmp_path):
    with pytest.raises(TmktError, match="does not exist") as error:
        ncaltech101.ncaltech101(tmp_path / "nowhere")
    message = str(error.value)
    assert "nowhere" in message and "orchard2015converting" in message
    assert "docs/datasets.md" in message and "\n" not in message

    with pytest.raises(TmktError, match="prepare.root is empty"):
        ncaltech101.ncaltech101(None)

    (tmp_path / "file.zip").write_bytes(b"x")
    with pytest.raises(TmktError, match="is a file"):
        ncaltech101.ncaltech101(tmp_path / "file.zip")

    with pytest.raises(TmktError, match="no N-Caltech101 recordings") as error:
        ncaltech101.ncaltech101(tmp_path)
    assert "Caltech101/<class>/*.bin" in str(error.value)

    recordings, images = ncaltech_files()
    write_tree(tmp_path, recordings)
    with pytest.raises(TmktError, match="no Caltech101 images"):
        ncaltech101.ncaltech101(tmp_path)
    write_tree(tmp_path, {k: v for k, v in images.items() if "/accordion/" not in k})
    with pytest.raises(TmktError, match="accordion"):
        ncaltech101.ncaltech101(tmp_path)


# --------------------------------------------------------------------------------------------
# CEP-DVS
# --------------------------------------------------------------------------------------------

# Dataset index -> class; the classes interleave so a position in the training subset is
# never the dataset index (the KT code's bug would pair the wrong images here).
CEP_LABELS = ["fish", "trees", "fish", "people", "trees", "fish", "people", "trees", "people",
              "fish", "trees", "people"]


def write_cepdvs(root: Path) -> None:
    rows = ["path,label"] + [f"data/img/{i}.png  x y z {c}" for i, c in enumerate(CEP_LABELS)]
    (root / "pathFile.csv").write_text("\n".join(rows) + "\n")
    (root / "data" / "MAT" / "img").mkdir(parents=True)
    (root / "data" / "img").mkdir(parents=True)
    for index in range(len(CEP_LABELS)):
        writers.write_cep_mat(root / "data" / "MAT" / "img" / f"{index}.mat", tagged_events(index),
                         hdf5=index == 3)
        (root / "data" / "img" / f"{index}.png").write_bytes(png_bytes(10 * index))


def test_cepdvs_pairs_by_true_dataset_index(tmp_path):
    write_cepdvs(tmp_path)
    data = cepdvs.cepdvs_source(tmp_path, train_per_class=2, test_per_class=1)
    assert data.classes == ["fish", "people", "trees"]  # CIFAR-100 coarse order
    # per class, in dataset-index order: fish 0,2 | 5; people 3,6 | 8; trees 1,4 | 7
    assert [r.source for r in data.train] == [f"data/MAT/img/{i}.mat" for i in (0, 2, 3, 6, 1, 4)]
    assert [r.source for r in data.test] == [f"data/MAT/img/{i}.mat" for i in (5, 8, 7)]
    for split, images in ((data.train, data.train_images), (data.test, data.test_images)):
        assert len(images) == len(split)
        for recording in split:
            events, _ = recording.load()
            index = int(events["x"][0])
            image = images[recording.image_index]
            assert image.source == f"data/img/{index}.png"
            assert int(image.load()[0, 0, 0]) == 10 * index
            assert image.label == recording.label == data.classes.index(CEP_LABELS[index])


def test_cepdvs_protocol_needs_350_per_class_and_a_layout(tmp_path):
    write_cepdvs(tmp_path)
    with pytest.raises(TmktError, match="the split needs 350"):
        cepdvs.cepdvs(tmp_path)
    (tmp_path / "data" / "img" / "4.png").unlink()
    with pytest.raises(TmktError, match="no image") as error:
        cepdvs.cepdvs_source(tmp_path, train_per_class=2, test_per_class=1)
    assert "4.mat" in str(error.value)
    with pytest.raises(TmktError, match="no pathFile.csv") as error:
        cepdvs.cepdvs(tmp_path / "data")
    assert "he2024efficient" in str(error.value)


def test_cepdvs_labels_from_pathfile(tmp_path):
    path = tmp_path / "pathFile.csv"
    path.write_text("name\nD:\\CEP\\img\\0.png 0 1 2 aquatic_mammals beaver\n"
                    "a b c d vehicles_1 people\n")
    assert cepdvs.read_cepdvs_labels(path) == ["aquatic_mammals", "vehicles_1"]
    path.write_text("name\nimg/0.png nothing here\n")
    with pytest.raises(TmktError, match="line 2 has no CIFAR-100 superclass"):
        cepdvs.read_cepdvs_labels(path)


# --------------------------------------------------------------------------------------------
# CIFAR10-DVS
# --------------------------------------------------------------------------------------------

def cifar_batch(labels: list[int], start: int) -> bytes:
    data = np.zeros((len(labels), 3072), np.uint8)
    data[:, :1024] = (start + np.arange(len(labels)))[:, None]  # red plane encodes the row
    return pickle.dumps({b"batch_label": b"fake", b"labels": labels, b"data": data,
                         b"filenames": [b"x.png"] * len(labels)}, protocol=2)


def write_cifar10(root: Path) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(cifar_batch([0, 1, 2, 9], 10 * i))
    (folder / "test_batch").write_bytes(cifar_batch([2, 1, 5], 100))


def test_cifar10dvs_classes_split_and_images(tmp_path):
    for name in ("airplane", "bird"):
        for k in range(12):  # natural order: ..._2 before ..._10
            writers.write_aedat2(_make_dirs(tmp_path / name) / f"cifar10_{name}_{k}.aedat",
                            tagged_events(k, size=128))
    # automobile kept as its original zip
    (tmp_path / "automobile.zip").write_bytes(zip_bytes(
        {f"automobile/cifar10_automobile_{k}.aedat": writers.encode_aedat2(tagged_events(k))
         for k in range(10)}))
    write_cifar10(tmp_path)
    data = cifar10dvs.cifar10dvs(tmp_path)

    assert data.classes == ["airplane", "automobile", "bird"]
    airplane_train = [r.source for r in data.train if r.label == 0]
    assert airplane_train == [f"airplane/cifar10_airplane_{k}.aedat" for k in range(11)]
    assert [r.source for r in data.test] == [
        "airplane/cifar10_airplane_11.aedat",
        "automobile.zip!automobile/cifar10_automobile_9.aedat",
        "bird/cifar10_bird_11.aedat"]
    assert all(r.image_index == -1 for r in data.train + data.test)
    events, size = data.test[1].load()
    assert size == (128, 128) and int(events["x"][0]) == 9

    # train images: rows with CIFAR labels airplane(0), automobile(1), bird(2); truck dropped
    assert len(data.train_images) == 15
    assert [i.label for i in data.test_images] == [2, 1]  # test batch labels 2, 1 (dog dropped)
    image = data.train_images[1].load()
    assert image.shape == (32, 32, 3) and image[0, 0, 0] == 11 and image[0, 0, 1] == 0
    assert data.train_images[1].source == "cifar-10-batches-py/data_batch_1#1"


def test_cifar10dvs_refuses_a_malicious_pickle(tmp_path):
    class Exploit:
        def __reduce__(self):
            import os
            return (os.system, ("echo should-never-run",))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": Exploit()}, protocol=2))
    with pytest.raises(TmktError, match="refused.*(posix|os)\\.system") as error:
        recorded.read_cifar_batch(path.read_bytes(), str(path))
    assert str(path) in str(error.value)


def test_cifar10dvs_missing_images(tmp_path):
    writers.write_aedat2(_make_dirs(tmp_path / "cat") / "cifar10_cat_0.aedat", tagged_events(1))
    with pytest.raises(TmktError, match="no CIFAR-10 python batches") as error:
        cifar10dvs.cifar10dvs(tmp_path)
    assert "li2017cifar10" in str(error.value)


# --------------------------------------------------------------------------------------------
# N-MNIST
# --------------------------------------------------------------------------------------------

def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def test_nmnist_with_mnist_idx(tmp_path):
    for split, count in (("Train", 3), ("Test", 1)):
        for digit in ("0", "1", "7"):
            for k in range(count):
                writers.write_atis_bin(_make_dirs(tmp_path / split / digit) / f"{k:05d}.bin",
                                  tagged_events(int(digit)))
    train_labels = np.array([7, 0, 3, 1, 0])
    train_images = np.arange(5)[:, None, None] * np.ones((5, 28, 28))
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(train_images)))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(train_labels))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.ones((2, 28, 28)) * 50))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.array([1, 2]))))

    data = nmnist.nmnist(tmp_path)
    assert data.classes == ["0", "1", "7"]
    assert [r.label for r in data.train] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert len(data.test) == 3
    events, size = data.train[-1].load()
    assert size == (34, 34) and int(events["x"][0]) == 7
    # digit 3 has no recordings: its image is dropped; labels follow the class list
    assert [(i.label, i.source) for i in data.train_images] == [
        (2, "train-images-idx3-ubyte.gz#0"), (0, "train-images-idx3-ubyte.gz#1"),
        (1, "train-images-idx3-ubyte.gz#3"), (0, "train-images-idx3-ubyte.gz#4")]
    image = data.train_images[2].load()
    assert image.shape == (28, 28, 3) and int(image[5, 5, 1]) == 3
    assert [i.label for i in data.test_images] == [1]


def test_nmnist_missing_pieces(tmp_path):
    with pytest.raises(TmktError, match="no Train/ folder or train.zip"):
        nmnist.nmnist(tmp_path)
    writers.write_atis_bin(_make_dirs(tmp_path / "Train" / "3") / "1.bin", tagged_events(1))
    writers.write_atis_bin(_make_dirs(tmp_path / "Test" / "3") / "2.bin", tagged_events(1))
    with pytest.raises(TmktError, match="no MNIST idx files"):
        nmnist.nmnist(tmp_path)


# --------------------------------------------------------------------------------------------
# DVS-Gesture
# --------------------------------------------------------------------------------------------

def test_dvsgesture_from_folder_and_tar(tmp_path):
    for user in ("user02_led", "user10_fluorescent"):
        for label in (0, 10, 2):
            writers.write_dvsgesture_npy(_make_dirs(tmp_path / "ibmGestureTrain" / user)
                                    / f"{label}.npy", tagged_events(label))
    (tmp_path / "ibmGestureTest.tar.gz").write_bytes(tar_bytes(
        {"ibmGestureTest/user24_led/4.npy": writers.encode_dvsgesture_npy(tagged_events(4))}))
    data = dvsgesture.dvsgesture(tmp_path)
    assert len(data.classes) == 11 and data.classes[10] == "Other gestures"
    assert [r.label for r in data.train] == [0, 2, 10, 0, 2, 10]
    assert data.train[0].source == "ibmGestureTrain/user02_led/0.npy"
    assert data.train_images == [] and data.test_images == []
    events, size = data.test[0].load()
    assert data.test[0].label == 4 and int(events["x"][0]) == 4 and size == (128, 128)


def test_dvsgesture_rejects_a_bad_label_file(tmp_path):
    writers.write_dvsgesture_npy(_make_dirs(tmp_path / "ibmGestureTrain" / "user01_led")
                            / "11.npy", tagged_events(1))
    writers.write_dvsgesture_npy(_make_dirs(tmp_path / "ibmGestureTest" / "user24_led")
                            / "1.npy", tagged_events(1))
    with pytest.raises(TmktError, match="class index 0-10") as error:
        dvsgesture.dvsgesture(tmp_path)
    assert "11.npy" in str(error.value)


def test_registry_lists_the_recorded_sources():
    assert {"ncaltech101", "cepdvs", "cifar10dvs", "nmnist", "dvsgesture"} <= set(
        sources.names())


def _make_dirs(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
