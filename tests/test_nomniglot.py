"""N-Omniglot: the AEDAT 4.0 reader (round trips, hand-made bytes, LZ4 frames, damaged files)
and the ``nomniglot`` source on a tiny fake release in the real layout (classes, the per-drawer
split, instance pairing, the crop, archives, and the errors a user gets)."""

from __future__ import annotations

import io
import pickle
import struct
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import event_writers as writers

from tmkt_cli.data import archives, sources
from tmkt_cli.data import formats as ev
from tmkt_cli.data.datasets import nomniglot as nom
from tmkt_cli.data.sources import EVENT_DTYPE
from tmkt_cli.errors import TmktError


@pytest.fixture(autouse=True)
def _fresh_caches():
    yield
    archives.clear_cache()
    nom._DECODED.clear()


def assert_one_line_naming(error: pytest.ExceptionInfo, name: str) -> None:
    message = str(error.value)
    assert name in message, message
    assert "\n" not in message


def random_events(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ev.make_events(1_632_000_000_000_000 + np.sort(rng.integers(0, 10**6, n)),
                          rng.integers(0, 346, n), rng.integers(0, 260, n), rng.integers(0, 2, n))


# --------------------------------------------------------------------------------------------
# LZ4 frames (the lz4 package, wrapped so damage is one line naming the file)
# --------------------------------------------------------------------------------------------

LZ4_MAGIC = struct.pack("<I", 0x184D2204)


def test_lz4_frames_skippable_frames_and_damage():
    import lz4.frame

    rng = np.random.default_rng(1)
    cases = [b"", b"a", bytes(rng.integers(0, 256, 3000, dtype=np.uint8)),
             b"event camera " * 9000,  # several 64 KB blocks, highly compressible
             random_events(3000).tobytes()]
    for data in cases:
        assert ev.lz4_frame_decompress(writers.lz4_frame_compress(data)) == data
    # Several frames, a skippable frame between them, and an empty frame with a content
    # checksum byte for byte as python-lz4 writes it: all decoded, in order.
    skippable = struct.pack("<II", 0x184D2A53, 3) + b"zzz"
    empty = bytes.fromhex("04224d186440a700000000055dcc02")
    joined = (lz4.frame.compress(cases[3]) + skippable
              + lz4.frame.compress(cases[4], block_checksum=True, content_checksum=True)
              + empty)
    assert ev.lz4_frame_decompress(joined) == cases[3] + cases[4]

    packed = bytearray(writers.lz4_frame_compress(cases[3]))
    damaged = bytes(packed[:6]) + bytes([packed[6] ^ 0xFF]) + bytes(packed[7:])
    for bad, why in ((damaged, "(?i)checksum"), (bytes(packed[:-40]), "incomplete"),
                     (b"PK\x03\x04 not lz4", "unknown")):
        with pytest.raises(TmktError, match=why) as error:
            ev.lz4_frame_decompress(bad, name="x.aedat4")
        assert_one_line_naming(error, "x.aedat4")
        assert "damaged LZ4 data" in str(error.value)


# --------------------------------------------------------------------------------------------
# AEDAT 4.0
# --------------------------------------------------------------------------------------------

def test_aedat4_round_trip(tmp_path):
    events = random_events(700)
    for compression in ("none", "lz4", "zstd"):
        path = tmp_path / f"{compression}.aedat4"
        writers.write_aedat4(path, events, compression=compression, events_per_packet=64)
        read, size = ev.read_aedat4(path)
        assert read.dtype == EVENT_DTYPE and size == (260, 346)
        np.testing.assert_array_equal(read, events)
        np.testing.assert_array_equal(ev.read_aedat4(path.read_bytes())[0], events)

    # a second event stream (id 0) interleaved, and a data table after the packets: only the
    # stream named "events" is read, and reading stops where the table starts
    data = writers.encode_aedat4(events, other_events=random_events(300, seed=5),
                            events_per_packet=100, data_table=b"FTAB-table-bytes")
    read, _ = ev.read_aedat4(data)
    np.testing.assert_array_equal(read, events)

    empty, size = ev.read_aedat4(writers.encode_aedat4(events[:0], sensor_size=(10, 20)))
    assert empty.size == 0 and size == (10, 20)


def ioheader_by_hand(description: bytes) -> bytes:
    """An IOHeader table holding only the description (compression and data-table position
    absent, so NONE and -1)."""
    vtable = struct.pack("<HHHHH", 10, 8, 0, 0, 4) + b"\x00\x00"  # at 4
    table = struct.pack("<iI", 12, 4)  # at 16: vtable at 16 - 12; description at 20 + 4
    return (struct.pack("<I", 16) + vtable + table
            + struct.pack("<I", len(description)) + description + b"\x00")


def event_packet_by_hand(rows: list[tuple[int, int, int, int]]) -> bytes:
    """A size-prefixed EventPacket laid out unlike tmkt's writer: the vtable after the table."""
    body = struct.pack("<I", 8) + b"EVTS"              # at 4: root -> table at 12
    body += struct.pack("<iI", -8, 12)                 # at 12: vtable at 20; vector at 16 + 12
    body += struct.pack("<HHH", 6, 8, 4) + b"\x00\x00"  # at 20: vtable
    body += struct.pack("<I", len(rows))               # at 28: events from 32
    for t, x, y, on in rows:
        body += struct.pack("<qhh?3x", t, x, y, bool(on))
    return struct.pack("<I", len(body)) + body


def test_aedat4_hand_made_bytes():
    description = (b'<dv version="2.0"><node name="outInfo" path="/o/">'
                   b'<node name="3" path="/o/3/"><attr key="typeIdentifier" type="string">EVTS'
                   b'</attr><node name="info" path="/o/3/info/"><attr key="sizeX" type="int">346'
                   b'</attr><attr key="sizeY" type="int">260</attr></node></node>'
                   b'<node name="4" path="/o/4/"><attr key="typeIdentifier" type="string">FRME'
                   b'</attr></node></node></dv>')
    header = ioheader_by_hand(description)
    packet = event_packet_by_hand([(1000, 5, 7, 1), (1500, 300, 250, 0)])
    frame_packet = b"not a flatbuffer at all, and never decoded"
    data = (b"#!AER-DAT4.0\r\n" + struct.pack("<I", len(header)) + header
            + struct.pack("<ii", 4, len(frame_packet)) + frame_packet
            + struct.pack("<ii", 3, len(packet)) + packet)
    events, size = ev.read_aedat4(data)
    assert size == (260, 346)
    assert events["t"].tolist() == [1000, 1500]
    assert events["x"].tolist() == [5, 300] and events["y"].tolist() == [7, 250]
    assert events["p"].tolist() == [1, 0]


def test_aedat4_damaged_files(tmp_path):
    path = tmp_path / "0001.aedat4"
    cases = {
        b"": "empty file",
        b"#!AER-DAT2.0\r\n# header\r\n": "version 2.0",
        b"PK\x03\x04 a zip": "not an AEDAT 4.0 file",
        b"#!AER-DAT4.0\r\n\x05": "truncated",
    }
    for data, message in cases.items():
        path.write_bytes(data)
        with pytest.raises(TmktError, match=message) as error:
            ev.read_aedat4(path)
        assert_one_line_naming(error, str(path))

    good = writers.encode_aedat4(random_events(500), events_per_packet=100)
    for cut in (len(good) - 7, len(good) - 100, 30):
        path.write_bytes(good[:cut])
        with pytest.raises(TmktError, match="truncated") as error:
            ev.read_aedat4(path)
        assert_one_line_naming(error, str(path))

    with_table = writers.encode_aedat4(random_events(50), data_table=b"T" * 40)
    path.write_bytes(with_table[:-50])  # the table position now lies beyond the end
    with pytest.raises(TmktError, match="truncated"):
        ev.read_aedat4(path)

    at = good.index(LZ4_MAGIC, 100) + 6  # header checksum byte of the first packet's frame
    path.write_bytes(good[:at] + bytes([good[at] ^ 0x55]) + good[at + 1:])
    with pytest.raises(TmktError, match="(?i)checksum") as error:
        ev.read_aedat4(path)
    assert_one_line_naming(error, str(path))


def test_aedat4_zstd_needs_the_optional_package(monkeypatch):
    fake = types.ModuleType("zstandard")

    class Compressor:
        def compress(self, data):
            return b"Z" + bytes(data)[::-1]

    class Decompressor:
        def decompressobj(self):
            return types.SimpleNamespace(decompress=lambda data: bytes(data)[1:][::-1])

    fake.ZstdCompressor, fake.ZstdDecompressor = Compressor, Decompressor
    monkeypatch.setitem(sys.modules, "zstandard", fake)
    events = random_events(100)
    data = writers.encode_aedat4(events, compression="zstd")
    np.testing.assert_array_equal(ev.read_aedat4(data)[0], events)

    monkeypatch.setitem(sys.modules, "zstandard", None)
    with pytest.raises(TmktError, match="zstandard") as error:
        ev.read_aedat4(data, name="dvs_background/A/character01/0001.aedat4")
    assert_one_line_naming(error, "0001.aedat4")


# --------------------------------------------------------------------------------------------
# The nomniglot source on a fake release
# --------------------------------------------------------------------------------------------

# (set, alphabet, character, Omniglot number); class c is the c-th row
CHARACTERS = [("background", "Alphabet_of_the_Magi", "character01", "0001"),
              ("background", "Alphabet_of_the_Magi", "character10", "0010"),
              ("evaluation", "Angelic", "character01", "0965")]
T0 = 1_632_000_000_000_000
TOP, LEFT = 4, 54  # the crop's origin


def tag(label: int, drawer: int) -> int:
    return 20 * label + drawer


def window(label: int, drawer: int) -> tuple[int, int]:
    start = T0 + tag(label, drawer) * 10_000
    return start, start + 5_000


def character_recording(label: int) -> tuple[np.ndarray, str]:
    """All 20 samples of a character in one recording, plus events between the windows. In
    each window: 3 events at x = LEFT + tag (inside the crop) and one at x = 10 (outside)."""
    rows = []
    for drawer in range(1, 21):
        start, end = window(label, drawer)
        rows += [(start - 1, 300, 200, 1)]  # before the window
        rows += [(start + k, LEFT + tag(label, drawer), TOP + drawer, k % 2) for k in range(3)]
        rows += [(start + 100, 10, 100, 1)]  # in the window, outside the crop
        rows += [(end, 301, 201, 0)]  # the end is excluded
    t, x, y, p = (np.array(column) for column in zip(*rows, strict=True))
    csv_text = "index,start,end\n" + "".join(
        f"{drawer - 1},{window(label, drawer)[0]},{window(label, drawer)[1]}\n"
        for drawer in range(1, 21))
    return ev.make_events(t, x, y, p), csv_text


def png(value: int, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (6, 6), value if mode == "L" else 1).save(buffer, format="PNG")
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def write_release(root: Path) -> None:
    """Background set as folders, evaluation set as the zips; recordings in three flavours
    (LZ4, uncompressed with a data table, LZ4 with a second event stream)."""
    members: dict[str, dict[str, bytes]] = {"dvs": {}, "images": {}}
    for label, (set_name, alphabet, character, number) in enumerate(CHARACTERS):
        events, csv_text = character_recording(label)
        options = [{}, {"compression": "none", "data_table": b"table"},
                   {"other_events": random_events(40)}][label]
        folder = f"{alphabet}/{character}"
        files = {f"dvs_{set_name}/{folder}/{number}.aedat4": writers.encode_aedat4(events, **options),
                 f"dvs_{set_name}/{folder}/{number}.csv": csv_text.encode(),
                 f"dvs_{set_name}/{folder}/dvSave-2021_10_20.aedat4": b"a raw save, ignored"}
        for drawer in range(1, 21):
            files[f"images_{set_name}/{folder}/{number}_{drawer:02d}.png"] = png(
                3 * tag(label, drawer))
        for name, data in files.items():
            if set_name == "evaluation":
                members["dvs" if name.startswith("dvs") else "images"][name] = data
            else:
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_bytes(data)
    # an Omniglot character without recordings, in 1-bit mode as the real PNGs are
    extra = root / "images_background/Alphabet_of_the_Magi/character05"
    extra.mkdir(parents=True)
    (extra / "0005_01.png").write_bytes(png(0, mode="1"))
    (root / "dvs_evaluation.zip").write_bytes(zip_bytes(members["dvs"]))
    (root / "images_evaluation.zip").write_bytes(zip_bytes(members["images"]))


def test_nomniglot_classes_split_pairing_and_crop(tmp_path):
    write_release(tmp_path)
    data = sources.get("nomniglot")(tmp_path, None)
    assert data.classes == ["Alphabet_of_the_Magi/character01",
                            "Alphabet_of_the_Magi/character10", "Angelic/character01"]
    assert data.info["image_classes_dropped"] == ["Alphabet_of_the_Magi/character05"]
    assert data.info["characters"] == {"background": 2, "evaluation": 1}
    assert len(data.train) == 45 and len(data.test) == 15
    assert [r.label for r in data.train] == [0] * 15 + [1] * 15 + [2] * 15
    assert data.train[0].source == \
        "dvs_background/Alphabet_of_the_Magi/character01/0001.aedat4#01"
    assert data.test[-1].source == \
        "dvs_evaluation.zip!dvs_evaluation/Angelic/character01/0965.aedat4#20"
    assert len(data.train_images) == 45 and len(data.test_images) == 15
    assert data.info["instance_pairing"].startswith("by Omniglot number and drawer")

    for split, images, drawers in ((data.train, data.train_images, range(1, 16)),
                                   (data.test, data.test_images, range(16, 21))):
        assert [int(r.source[-2:]) for r in split] == list(drawers) * 3
        for recording in split:
            drawer = int(recording.source[-2:])
            events, size = recording.load()
            assert size == (250, 250) and events.dtype == EVENT_DTYPE
            inside = events[events["x"] >= 0]
            assert inside["x"].tolist() == [tag(recording.label, drawer)] * 3
            assert inside["y"].tolist() == [drawer] * 3
            assert (events["x"] < 0).sum() == 1  # outside the crop: prepare drops it
            image = images[recording.image_index]
            assert image.label == recording.label
            assert image.source.endswith(f"_{drawer:02d}.png")
            pixels = image.load()
            assert pixels.dtype == np.uint8 and pixels.shape == (6, 6, 3)
            assert int(pixels[0, 0, 1]) == 3 * tag(recording.label, drawer)

    # loaders travel to worker processes
    restored = pickle.loads(pickle.dumps(data.test[-1].load))
    np.testing.assert_array_equal(restored()[0], data.test[-1].load()[0])

    uncropped = nom.nomniglot_source(tmp_path, crop=False)
    events, size = uncropped.train[16].load()  # class 1, drawer 2
    assert size == (260, 346) and events["x"].tolist() == [LEFT + tag(1, 2)] * 3 + [10]


def test_nomniglot_pairing_needs_every_image(tmp_path):
    write_release(tmp_path)
    (tmp_path / "images_background/Alphabet_of_the_Magi/character10/0010_17.png").unlink()
    data = nom.nomniglot(tmp_path)
    assert all(r.image_index == -1 for r in data.train + data.test)
    assert data.info["instance_pairing"].startswith("unavailable")
    assert len(data.test_images) == 14  # class pairing still draws from what there is


def test_nomniglot_damaged_files_name_themselves(tmp_path):
    write_release(tmp_path)
    recording = tmp_path / "dvs_background/Alphabet_of_the_Magi/character01/0001.aedat4"
    recording.write_bytes(recording.read_bytes()[:-30])
    data = nom.nomniglot(tmp_path)  # listing reads only the CSVs
    with pytest.raises(TmktError, match="truncated") as error:
        data.train[0].load()
    assert_one_line_naming(error, str(recording))

    windows = recording.with_suffix(".csv")
    windows.write_text("index,start,end\n0,200,100\n")
    with pytest.raises(TmktError, match="line 2 ends") as error:
        nom.nomniglot(tmp_path)
    assert_one_line_naming(error, str(windows))
    windows.write_text("index,start,end\n0,abc,100\n")
    with pytest.raises(TmktError, match="columns 2 and 3"):
        nom.nomniglot(tmp_path)


def test_nomniglot_missing_root_and_layout_errors(tmp_path):
    with pytest.raises(TmktError, match="does not exist") as error:
        nom.nomniglot(tmp_path / "nowhere")
    message = str(error.value)
    for expected in ("nowhere", "dvs_background/<alphabet>/<character>/<NNNN>.aedat4",
                     "images_background/<alphabet>/<character>/<NNNN>_<DD>.png",
                     "li2022nomniglot", "figshare", "docs/datasets.md"):
        assert expected in message
    assert "\n" not in message
    with pytest.raises(TmktError, match="prepare.root is empty"):
        nom.nomniglot(None)
    with pytest.raises(TmktError, match="no dvs_background/ folder"):
        nom.nomniglot(tmp_path)

    write_release(tmp_path)
    (tmp_path / "images_evaluation.zip").unlink()
    with pytest.raises(TmktError, match="no Omniglot images_evaluation/ folder"):
        nom.nomniglot(tmp_path)
    (tmp_path / "images_evaluation").mkdir()
    (tmp_path / "images_evaluation/Angelic/character02").mkdir(parents=True)
    (tmp_path / "images_evaluation/Angelic/character02/0966_01.png").write_bytes(png(9))
    with pytest.raises(TmktError, match="no Omniglot images for evaluation character "
                                        "Angelic/character01"):
        nom.nomniglot(tmp_path)

    (tmp_path / "dvs_background/Alphabet_of_the_Magi/character01/0001.csv").unlink()
    with pytest.raises(TmktError, match="exactly one <NNNN>.csv"):
        nom.nomniglot(tmp_path)


def test_registry_lists_nomniglot():
    assert "nomniglot" in sources.names()
