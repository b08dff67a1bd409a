"""Readers of the real event formats: round trips through the writers, hand-made bytes (so the
writers are not only checked against themselves), agreement with tonic's readers, and damaged
files, which must give one-line TmktErrors naming the file."""

from __future__ import annotations

import numpy as np
import pytest
from support import event_writers as writers

from tmkt_cli.data import formats as ev
from tmkt_cli.data.sources import EVENT_DTYPE
from tmkt_cli.errors import TmktError


def random_events(n: int, *, width: int, height: int, max_t: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ev.make_events(np.sort(rng.integers(0, max_t, n)), rng.integers(0, width, n),
                          rng.integers(0, height, n), rng.integers(0, 2, n))


def assert_one_line_naming(error: pytest.ExceptionInfo, name: str) -> None:
    message = str(error.value)
    assert name in message
    assert "\n" not in message


# --------------------------------------------------------------------------------------------
# ATIS .bin
# --------------------------------------------------------------------------------------------

def atis_record(x: int, y: int, p: int, t: int) -> bytes:
    """One 5-byte ATIS event built by hand from the published layout."""
    return bytes([x, y, (p << 7) | (t >> 16), (t >> 8) & 0xFF, t & 0xFF])


def test_atis_round_trip_through_overflow_markers(tmp_path):
    # Times up to 3 x 2**23 µs need overflow markers, so the writer must insert them.
    events = random_events(500, width=240, height=180, max_t=3 * 2**23)
    path = tmp_path / "image_0001.bin"
    writers.write_atis_bin(path, events)
    assert path.stat().st_size > 5 * events.size  # markers were written

    read, size = ev.read_atis_bin(path)
    assert read.dtype == EVENT_DTYPE
    np.testing.assert_array_equal(read, events)
    assert size == (int(events["y"].max()) + 1, int(events["x"].max()) + 1)

    from_bytes, _ = ev.read_atis_bin(path.read_bytes())
    np.testing.assert_array_equal(from_bytes, events)


def test_atis_hand_made_bytes_with_overflow_markers():
    data = (atis_record(3, 4, 1, 0x7FFFFF)
            + atis_record(0, 240, 0, 0)  # marker: later times + 2**13
            + atis_record(5, 6, 0, 10)
            + atis_record(9, 240, 1, 77)  # second marker, its own bits are irrelevant
            + atis_record(7, 8, 1, 20))
    events, size = ev.read_atis_bin(data, sensor_size=(34, 34))
    assert events["t"].tolist() == [0x7FFFFF, 10 + 2**13, 20 + 2 * 2**13]
    assert events["x"].tolist() == [3, 5, 7]
    assert events["y"].tolist() == [4, 6, 8]
    assert events["p"].tolist() == [1, 0, 1]
    assert size == (34, 34)
    # and the writer produces exactly these bytes for events that need no marker
    assert writers.encode_atis_bin(events[:1]) == atis_record(3, 4, 1, 0x7FFFFF)


def test_atis_matches_tonic(tmp_path):
    from tonic.io import read_mnist_file

    events = random_events(300, width=34, height=34, max_t=2**24, seed=1)
    path = tmp_path / "00002.bin"
    writers.write_atis_bin(path, events)
    ours, _ = ev.read_atis_bin(path)
    theirs = read_mnist_file(str(path), dtype=np.dtype(
        [("x", int), ("y", int), ("t", int), ("p", int)]))
    for field in ("x", "y", "t", "p"):
        np.testing.assert_array_equal(ours[field], theirs[field])


def test_atis_only_markers_is_refused():
    """Made only of time-overflow markers: no event, so not a recording (issue 15)."""
    with pytest.raises(TmktError, match="3 time-overflow/special record"):
        ev.read_atis_bin(atis_record(0, 240, 0, 0) * 3, name="markers.bin")


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (atis_record(1, 2, 0, 3) + b"\x01\x02", "not a multiple of 5"),
])
def test_atis_damaged_file_names_it(tmp_path, data, words):
    path = tmp_path / "bad.bin"
    path.write_bytes(data)
    with pytest.raises(TmktError, match=words) as error:
        ev.read_atis_bin(path)
    assert_one_line_naming(error, str(path))


def test_member_bytes_are_named_by_the_caller():
    with pytest.raises(TmktError) as error:
        ev.read_atis_bin(b"\x00" * 7, name="Caltech101.zip!Caltech101/ant/image_0001.bin")
    assert_one_line_naming(error, "Caltech101.zip!Caltech101/ant/image_0001.bin")


def test_missing_file_names_it(tmp_path):
    with pytest.raises(TmktError, match="not found") as error:
        ev.read_atis_bin(tmp_path / "nope.bin")
    assert_one_line_naming(error, "nope.bin")


def test_atis_writer_refuses_the_marker_row():
    with pytest.raises(ValueError):
        writers.encode_atis_bin(ev.make_events([0], [1], [240], [0]))


# --------------------------------------------------------------------------------------------
# AEDAT 2.0 (CIFAR10-DVS, DVS128)
# --------------------------------------------------------------------------------------------

AEDAT2_HEADER = b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n"


def aedat_words(*pairs: tuple[int, int]) -> bytes:
    return np.array(pairs, dtype=">u4").tobytes()


def test_aedat2_round_trip(tmp_path):
    events = random_events(400, width=128, height=128, max_t=2**31, seed=2)
    path = tmp_path / "cifar10_cat_0.aedat"
    writers.write_aedat2(path, events)
    read, size = ev.read_aedat2(path)
    assert read.dtype == EVENT_DTYPE
    np.testing.assert_array_equal(read, events)
    assert size == (128, 128)


def test_aedat2_hand_made_address_layout():
    # jAER DVS128: bit 0 polarity (0 = ON), bits 1-7 column, bits 8-14 row (both mirrored),
    # bit 15 an external event.
    on_event = (9 << 8) | (5 << 1) | 0
    off_event = (0 << 8) | (127 << 1) | 1
    external = 1 << 15
    data = AEDAT2_HEADER + aedat_words((on_event, 1000), (external, 1500), (off_event, 2000))
    events, size = ev.read_aedat2(data)
    assert events["x"].tolist() == [127 - 5, 0]
    assert events["y"].tolist() == [127 - 9, 127]
    assert events["p"].tolist() == [1, 0]
    assert events["t"].tolist() == [1000, 2000]
    assert size == (128, 128)


def test_aedat2_matches_tonic_raw_words(tmp_path):
    from tonic.io import get_aer_events_from_file, read_aedat_header_from_file

    events = random_events(200, width=128, height=128, max_t=10**7, seed=3)
    path = tmp_path / "rec.aedat"
    writers.write_aedat2(path, events)
    version, start, _ = read_aedat_header_from_file(str(path))
    raw = get_aer_events_from_file(str(path), version, start)
    address = raw["address"].astype(np.int64)
    ours, _ = ev.read_aedat2(path)
    assert version == 2.0
    np.testing.assert_array_equal(ours["t"], raw["timeStamp"])
    np.testing.assert_array_equal(ours["x"], 127 - ((address >> 1) & 0x7F))
    np.testing.assert_array_equal(ours["y"], 127 - ((address >> 8) & 0x7F))
    np.testing.assert_array_equal(ours["p"], 1 - (address & 1))


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (aedat_words((1, 2)), "no '#!AER-DAT'"),
    (b"#!AER-DAT3.1\r\n" + aedat_words((1, 2)), "version 3.1"),
    (AEDAT2_HEADER + aedat_words((1, 2)) + b"\x00\x01\x02", "truncated"),
    (b"#!AER-DAT2.0 and no line end", "header never ends"),
])
def test_aedat2_damaged_file_names_it(tmp_path, data, words):
    path = tmp_path / "bad.aedat"
    path.write_bytes(data)
    with pytest.raises(TmktError, match=words) as error:
        ev.read_aedat2(path)
    assert_one_line_naming(error, str(path))


# --------------------------------------------------------------------------------------------
# CEP-DVS .mat
# --------------------------------------------------------------------------------------------

def test_cep_mat_hand_made_with_scipy(tmp_path):
    import scipy.io

    path = tmp_path / "0.mat"
    scipy.io.savemat(str(path), {"x": np.array([[3.0], [10.0]]), "y": np.array([[4.0], [1.0]]),
                                 "ts": np.array([[100.0], [250.0]]),
                                 "p": np.array([[-1.0], [1.0]])})
    events, size = ev.read_cep_mat(path)
    assert events.dtype == EVENT_DTYPE
    assert events["x"].tolist() == [3, 10] and events["y"].tolist() == [4, 1]
    assert events["t"].tolist() == [100, 250] and events["p"].tolist() == [0, 1]
    assert size == (5, 11)  # largest coordinates + 1


def test_cep_mat_hand_made_v73_with_h5py(tmp_path):
    import h5py

    path = tmp_path / "1.mat"
    with h5py.File(path, "w") as f:  # MATLAB v7.3 stores column vectors as 1 x N
        f["x"] = np.array([[2.0, 5.0, 7.0]])
        f["y"] = np.array([[1.0, 0.0, 3.0]])
        f["ts"] = np.array([[0.0, 5.0, 9.0]])
        f["p"] = np.array([[1.0, -1.0, 1.0]])
    events, size = ev.read_cep_mat(path.read_bytes(), name=str(path))
    assert events["x"].tolist() == [2, 5, 7] and events["p"].tolist() == [1, 0, 1]
    assert events["t"].tolist() == [0, 5, 9]
    assert size == (4, 8)


@pytest.mark.parametrize("hdf5", [False, True])
def test_cep_mat_writer_round_trip_with_sensor_size(tmp_path, hdf5):
    events = random_events(100, width=60, height=50, max_t=10**6, seed=4)
    path = tmp_path / "2.mat"
    writers.write_cep_mat(path, events, sensor_size=(64, 80), hdf5=hdf5)
    read, size = ev.read_cep_mat(path)
    np.testing.assert_array_equal(read, events)
    assert size == (64, 80)


def test_cep_mat_missing_field_and_damaged_files(tmp_path):
    import scipy.io

    missing = tmp_path / "3.mat"
    scipy.io.savemat(str(missing), {"x": np.zeros((2, 1)), "y": np.zeros((2, 1)),
                                    "p": np.ones((2, 1))})
    with pytest.raises(TmktError, match="missing variable.*ts") as error:
        ev.read_cep_mat(missing)
    assert_one_line_naming(error, str(missing))

    uneven = tmp_path / "4.mat"
    scipy.io.savemat(str(uneven), {"x": np.zeros((2, 1)), "y": np.zeros((3, 1)),
                                   "ts": np.zeros((2, 1)), "p": np.ones((2, 1))})
    with pytest.raises(TmktError, match="differ in length") as error:
        ev.read_cep_mat(uneven)
    assert_one_line_naming(error, str(uneven))

    for name, data in (("5.mat", b""), ("6.mat", b"\x13" * 300)):
        damaged = tmp_path / name
        damaged.write_bytes(data)
        with pytest.raises(TmktError) as error:
            ev.read_cep_mat(damaged)
        assert_one_line_naming(error, str(damaged))


# --------------------------------------------------------------------------------------------
# DVS-Gesture (tonic's npy)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.int32])
def test_dvsgesture_npy_matches_tonic(tmp_path, dtype):
    import tonic.datasets.dvsgesture as tonic_gesture

    path = tmp_path / "3.npy"
    np.save(path, np.array([[1, 2, 1, 5], [127, 0, 0, 7], [64, 99, 1, 12]], dtype=dtype))
    ours, size = ev.read_dvsgesture_npy(path)

    # tonic's own __getitem__ on the same file, without its download machinery
    dataset = object.__new__(tonic_gesture.DVSGesture)
    dataset.data, dataset.targets = [str(path)], [3]
    dataset.transform = dataset.target_transform = dataset.transforms = None
    theirs, _ = dataset[0]
    for field in ("x", "y", "t", "p"):
        np.testing.assert_array_equal(ours[field], theirs[field].astype(np.int64))
    assert ours["t"].tolist() == [5000, 7000, 12000]
    assert size == (128, 128)


def test_dvsgesture_writer_round_trip():
    events = random_events(50, width=128, height=128, max_t=10**7, seed=5)
    events["t"] = events["t"] // 1000 * 1000  # the format keeps milliseconds
    read, _ = ev.read_dvsgesture_npy(writers.encode_dvsgesture_npy(events))
    np.testing.assert_array_equal(read, events)


def test_dvsgesture_damaged_files_name_them(tmp_path):
    cases = {
        "wrong_shape.npy": lambda p: np.save(p, np.zeros((4, 3))),
        "pickled.npy": lambda p: np.save(p, np.array([{"x": 1}], dtype=object),
                                         allow_pickle=True),
        "empty.npy": lambda p: p.write_bytes(b""),
        "text.npy": lambda p: p.write_bytes(b"not numpy at all"),
    }
    for name, make in cases.items():
        path = tmp_path / name
        make(path)
        with pytest.raises(TmktError) as error:
            ev.read_dvsgesture_npy(path)
        assert_one_line_naming(error, str(path))
