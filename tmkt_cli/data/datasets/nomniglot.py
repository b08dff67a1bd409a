"""N-Omniglot (events) with Omniglot (images) for ``tmkt prepare``.

N-Omniglot (Li et al., Scientific Data 2022) recorded the 1,623 Omniglot characters being
written: for each character, the strokes of its 20 drawers were replayed as a video on a screen
and filmed with a DAVIS346 in one AEDAT 4.0 file, with a CSV file giving the start and end
timestamps of each drawer's sample. The release keeps Omniglot's folders::

    dvs_background/<alphabet>/character<NN>/<NNNN>.aedat4 and <NNNN>.csv   (964 characters)
    dvs_evaluation/<alphabet>/character<NN>/<NNNN>.aedat4 and <NNNN>.csv   (659 characters)

where ``NNNN`` is the number Omniglot gives the character (its images are
``images_<set>/<alphabet>/character<NN>/<NNNN>_<DD>.png``, ``DD`` the drawer 01-20), and CSV
row ``i`` is drawer ``i + 1``. The authors' loader (Brain-Cog-Lab/N-Omniglot,
``data_loader/utils.py``) cuts row ``i``'s sample from the first event stamped with its start
timestamp up to the first event stamped with its end timestamp and names it ``NNNN_<i+1>``.

What tmkt builds from it (docs/datasets.md, "N-Omniglot", has the reasons):

* **Classes:** one per character, 1,623: the background set then the evaluation set, each
  sorted by alphabet then character (numbers compared as numbers), named
  ``<alphabet>/character<NN>``.
* **Split:** per character, drawers 1-15 train and 16-20 test, for the recordings and the
  images alike. (Omniglot's background/evaluation split has disjoint classes: a few-shot
  protocol. For classification, the authors' ``nomniglot_full.py`` and the KT code pool both
  sets and keep 15 of every 20 samples per class for training.)
* **Images:** the Omniglot PNGs as uint8 RGB (grey repeated). Class pairing draws from the
  training images, i.e. drawers 1-15 of the character, which is what the KT code samples from.
* **Instance pairing:** recording ``NNNN`` drawer ``DD`` <-> image ``NNNN_DD.png``, set only
  when every recording of both splits finds its image.
* **Crop:** the recordings are cut to the 250 x 250 window the authors' loader keeps
  (rows 4-253, columns 54-303 of the 260 x 346 sensor), where the character was shown; events
  outside it are counted as dropped by ``prepare``.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath

import numpy as np

from tmkt_cli.data.archives import MEMBER_SEPARATOR, FileRef
from tmkt_cli.data.datasets.recorded import (
    DatasetFacts,
    FoundFile,
    find_files,
    first_existing,
    layout_error,
    load_image_file,
    natural_key,
    read_args,
    releases_archives,
    require_root,
)
from tmkt_cli.data.formats import read_aedat4
from tmkt_cli.data.sources import ImageItem, Recording, SourceData, register
from tmkt_cli.errors import TmktError

NOMNIGLOT = DatasetFacts(
    "nomniglot", "N-Omniglot",
    "https://doi.org/10.6084/m9.figshare.16821427 (N-Omniglot) and the Omniglot images at "
    "https://github.com/brendenlake/omniglot (python/images_background.zip, "
    "python/images_evaluation.zip)",
    "li2022nomniglot",
    "dvs_background/<alphabet>/<character>/<NNNN>.aedat4 + <NNNN>.csv and dvs_evaluation/... "
    "(or dvs_background.zip, dvs_evaluation.zip) beside images_background/<alphabet>/"
    "<character>/<NNNN>_<DD>.png and images_evaluation/... (or images_background.zip, "
    "images_evaluation.zip)")

SETS = ("background", "evaluation")
"""Omniglot's two sets, in label order (background characters first, as in the authors'
classification loader)."""
EVENT_CANDIDATES = {s: (f"dvs_{s}", f"dvs_{s}.zip", f"dvs_{s}.tar", f"dvs_{s}.tar.gz",
                        f"N-Omniglot/dvs_{s}", f"NOmniglot/dvs_{s}")
                    for s in SETS}
IMAGE_CANDIDATES = {s: (f"images_{s}", f"images_{s}.zip", f"omniglot-py/images_{s}",
                        f"omniglot-py/images_{s}.zip", f"omniglot/python/images_{s}",
                        f"omniglot/python/images_{s}.zip")
                    for s in SETS}
DRAWERS = 20
"""Omniglot drawers per character, hence samples per N-Omniglot character."""
TRAIN_DRAWERS = 15
"""Drawers 1..15 of each character train, the rest test."""
CROP = (4, 54, 250, 250)
"""(top, left, height, width) of the window the authors' loader keeps (``[4:254, 54:304]``)."""

_RECORDING_NAME = re.compile(r"^(\d+)\.aedat4$", re.IGNORECASE)
_WINDOWS_NAME = re.compile(r"^(\d+)\.csv$", re.IGNORECASE)
_IMAGE_NAME = re.compile(r"^(\d+)_(\d+)\.png$", re.IGNORECASE)


@dataclass(frozen=True)
class EventCharacter:
    """One character's recording: its file, its Omniglot number and one (start, end) window
    in µs per drawer (drawer = position + 1)."""

    alphabet: str
    character: str
    number: str
    recording: FoundFile
    windows: tuple[tuple[int, int], ...]


_SetImages = dict[str, dict[tuple[str, str], dict[int, tuple[str, FoundFile]]]]
"""Per set, per (alphabet, character), per drawer: (Omniglot number, image file)."""
_Sample = tuple[str, int, int, Recording]
"""(split, label, drawer, recording) of one drawer's sample."""


# --------------------------------------------------------------------------------------------
# The source
# --------------------------------------------------------------------------------------------

@register("nomniglot")
@releases_archives
def nomniglot(root: Path | None, cfg: object = None) -> SourceData:
    """N-Omniglot recordings with Omniglot images: 1,623 classes, drawers 1-15 train."""
    return nomniglot_source(root)


def nomniglot_source(root: Path | None, *, train_drawers: int = TRAIN_DRAWERS,
                     crop: bool = True) -> SourceData:
    """The ``nomniglot`` source with a configurable split point and crop (the registered one
    uses drawers 1-15 for training and the authors' crop)."""
    facts = NOMNIGLOT
    root = require_root(root, facts)
    events, images, places = _list_sets(root, facts)
    classes, characters = _classes(events, images, places, facts)
    dropped = sorted(f"{k[0]}/{k[1]}" for s in SETS for k in images[s] if k not in events[s])
    train, test, train_images, test_images, position, mismatched = _split_samples(
        characters, images, train_drawers, crop)

    # Instance pairing only when every recording finds its own image: a partial pairing would
    # silently mix instance and class pairing.
    paired = all((split, label, drawer) in position
                 for split, label, drawer, _ in train + test)
    short = sorted(f"{c.alphabet}/{c.character}" for _, c in characters
                   if len(c.windows) < DRAWERS)
    top, left, height, width = CROP
    return SourceData(
        classes=classes, train=_recordings(train, paired, position),
        test=_recordings(test, paired, position),
        train_images=train_images, test_images=test_images,
        info={
            "dataset": facts.title, "citation": facts.citation, "url": facts.url,
            **places,
            "characters": {s: len(events[s]) for s in SETS},
            "class_mapping": "one class per character: the background set then the evaluation "
                             "set, each sorted by alphabet then character; images matched by "
                             "the same set/alphabet/character folders",
            "image_classes_dropped": dropped,
            "split": f"per character: drawers 1-{train_drawers} train, "
                     f"{train_drawers + 1}-{DRAWERS} test (CSV row i is drawer i + 1; images "
                     f"NNNN_DD.png by DD)",
            "characters_with_fewer_than_20_drawers": short,
            "instance_pairing": _pairing_note(paired, mismatched),
            "sample_window": "events with start <= t < end of the drawer's CSV row (columns "
                             "2 and 3, µs)",
            "sensor_size": (f"{height} x {width}: the authors' crop, rows {top}-{top + height - 1}"
                            f" and columns {left}-{left + width - 1} of the 260 x 346 DAVIS346"
                            if crop else "260 x 346 (DAVIS346), uncropped"),
        })


def _list_sets(root: Path, facts: DatasetFacts
               ) -> tuple[dict[str, dict[tuple[str, str], EventCharacter]], _SetImages,
                          dict[str, str]]:
    """(event characters, image characters, container names) of each set, set by set."""
    events: dict[str, dict[tuple[str, str], EventCharacter]] = {}
    images: _SetImages = {}
    places: dict[str, str] = {}
    for set_name in SETS:
        candidates = EVENT_CANDIDATES[set_name]
        container = first_existing(root, candidates)
        if container is None:
            raise layout_error(facts, f"no {candidates[0]}/ folder (or {candidates[1]}) in "
                                      f"{root}")
        events[set_name] = _event_characters(container, root, facts)
        places[f"events_{set_name}"] = container.name
        candidates = IMAGE_CANDIDATES[set_name]
        container = first_existing(root, candidates)
        if container is None:
            raise layout_error(facts, f"no Omniglot {candidates[0]}/ folder (or "
                                      f"{candidates[1]}) in {root}")
        images[set_name] = _image_characters(container, root, facts)
        places[f"images_{set_name}"] = container.name
    return events, images, places


def _classes(events: dict[str, dict[tuple[str, str], EventCharacter]],
             images: _SetImages, places: dict[str, str], facts: DatasetFacts
             ) -> tuple[list[str], list[tuple[str, EventCharacter]]]:
    """(class names, (set, character) per label): set by set, sorted by alphabet, character."""
    classes: list[str] = []
    characters: list[tuple[str, EventCharacter]] = []
    for set_name in SETS:
        for key in sorted(events[set_name], key=lambda k: (natural_key(k[0]), natural_key(k[1]))):
            character = events[set_name][key]
            if key not in images[set_name]:
                raise layout_error(facts, f"no Omniglot images for {set_name} character "
                                          f"{key[0]}/{key[1]} in {places[f'images_{set_name}']}")
            name = f"{key[0]}/{key[1]}"
            if name in classes:
                raise layout_error(facts, f"character {name} is in both sets")
            classes.append(name)
            characters.append((set_name, character))
    return classes, characters


def _split_samples(characters: list[tuple[str, EventCharacter]], images: _SetImages,
                   train_drawers: int, crop: bool
                   ) -> tuple[list[_Sample], list[_Sample], list[ImageItem], list[ImageItem],
                              dict[tuple[str, int, int], int], list[str]]:
    """(train, test, train_images, test_images, position, mismatched): the recordings as
    (split, label, drawer, Recording), the image items, each recording's own image position by
    (split, label, drawer), and the recordings whose number differs from their images'."""
    train: list[_Sample] = []
    test: list[_Sample] = []
    train_images: list[ImageItem] = []
    test_images: list[ImageItem] = []
    position: dict[tuple[str, int, int], int] = {}  # (split, label, drawer) -> image position
    mismatched: list[str] = []
    for label, (set_name, character) in enumerate(characters):
        key = (character.alphabet, character.character)
        for drawer, (number, found) in sorted(images[set_name][key].items()):
            split, items = ("train", train_images) if drawer <= train_drawers \
                else ("test", test_images)
            if number == character.number:
                position[(split, label, drawer)] = len(items)
            elif character.recording.source not in mismatched:
                mismatched.append(character.recording.source)
            items.append(ImageItem(found.source, label, partial(load_image_file, found.ref)))
        for drawer, (start, end) in enumerate(character.windows, start=1):
            split = "train" if drawer <= train_drawers else "test"
            (train if split == "train" else test).append(
                (split, label, drawer, Recording(
                    f"{character.recording.source}#{drawer:02d}", label,
                    partial(load_nomniglot_recording, character.recording.ref, start, end,
                            crop))))
    return train, test, train_images, test_images, position, mismatched


def _recordings(entries: list[_Sample], paired: bool, position: dict[tuple[str, int, int], int]
                ) -> list[Recording]:
    """The Recordings of (split, label, drawer, Recording) entries, given their own image
    position when ``paired``."""
    if not paired:
        return [r for *_, r in entries]
    return [Recording(r.source, r.label, r.load, image_index=position[(split, label, drawer)])
            for split, label, drawer, r in entries]


def _pairing_note(paired: bool, mismatched: list[str]) -> str:
    """The info line saying how recordings pair with images, or why they do not."""
    if paired:
        return "by Omniglot number and drawer (NNNN.aedat4 row DD <-> NNNN_DD.png)"
    if mismatched:
        return (f"unavailable: the recording number differs from the image numbers for "
                f"{len(mismatched)} character(s), e.g. {mismatched[0]}")
    return "unavailable: some recordings have no image of their drawer in their split"


# --------------------------------------------------------------------------------------------
# Listing the release
# --------------------------------------------------------------------------------------------

def _character_of(found: FoundFile, facts: DatasetFacts) -> tuple[str, str]:
    """(alphabet, character) from a file's path: its two parent folders."""
    inner = found.source.rsplit(MEMBER_SEPARATOR, 1)[-1]
    parts = PurePosixPath(inner).parts
    if len(parts) < 3:
        raise layout_error(facts, f"{found.ref}: expected <alphabet>/<character>/{found.name}")
    return parts[-3], parts[-2]


def _event_characters(container: Path, root: Path, facts: DatasetFacts
                      ) -> dict[tuple[str, str], EventCharacter]:
    per_character: dict[tuple[str, str], dict[str, list[FoundFile]]] = {}
    for found in find_files(container, root, (".aedat4", ".csv")):
        kind = "recording" if _RECORDING_NAME.match(found.name) else \
            "windows" if _WINDOWS_NAME.match(found.name) else None
        if kind is None:
            continue  # other files (e.g. raw DV saves) are not samples
        entry = per_character.setdefault(_character_of(found, facts),
                                         {"recording": [], "windows": []})
        entry[kind].append(found)
    if not per_character:
        raise layout_error(facts, f"no <alphabet>/<character>/<NNNN>.aedat4 recordings in "
                                  f"{container}")
    characters = {}
    for key, entry in per_character.items():
        where = f"{container.name}: {key[0]}/{key[1]}"
        for kind, what in (("recording", "<NNNN>.aedat4"), ("windows", "<NNNN>.csv")):
            if len(entry[kind]) != 1:
                found = ", ".join(f.name for f in entry[kind]) or "none"
                raise layout_error(facts, f"{where} needs exactly one {what} (found {found})")
        recording, windows_file = entry["recording"][0], entry["windows"][0]
        number = _RECORDING_NAME.match(recording.name).group(1)
        if _WINDOWS_NAME.match(windows_file.name).group(1) != number:
            raise layout_error(facts, f"{where}: {recording.name} and {windows_file.name} do "
                                      f"not name the same character")
        windows = read_nomniglot_windows(windows_file.ref.read_bytes(), str(windows_file.ref))
        characters[key] = EventCharacter(key[0], key[1], number, recording, tuple(windows))
    return characters


def _image_characters(container: Path, root: Path, facts: DatasetFacts
                      ) -> dict[tuple[str, str], dict[int, tuple[str, FoundFile]]]:
    characters: dict[tuple[str, str], dict[int, tuple[str, FoundFile]]] = {}
    for found in find_files(container, root, (".png",)):
        match = _IMAGE_NAME.match(found.name)
        if match is None:
            continue
        drawers = characters.setdefault(_character_of(found, facts), {})
        drawer = int(match.group(2))
        if drawer in drawers:
            raise TmktError(f"{found.ref}: drawer {drawer} appears twice (also "
                            f"{drawers[drawer][1].ref})")
        drawers[drawer] = (match.group(1), found)
    if not characters:
        raise layout_error(facts, f"no <alphabet>/<character>/<NNNN>_<DD>.png images in "
                                  f"{container}")
    return characters


def read_nomniglot_windows(data: bytes, label: str) -> list[tuple[int, int]]:
    """The (start, end) µs window of each sample row of an N-Omniglot CSV, in row order.

    The columns are not documented; the authors' loader reads them with pandas (so the first
    line is a header) and takes the second and third columns as the start and end timestamps.
    Here a first line whose first three cells are not all numbers is the header; every other
    non-blank line must have numbers in columns 2 and 3, with start <= end.
    """
    try:
        text = bytes(data).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TmktError(f"{label}: not a text file") from None
    rows = [(number, row) for number, row in enumerate(csv.reader(text.splitlines()), start=1)
            if any(cell.strip() for cell in row)]
    windows = []
    for index, (number, row) in enumerate(rows):
        values = [_integer(cell) for cell in row[:3]]
        if index == 0 and (len(values) < 3 or None in values):
            continue  # the header
        if len(values) < 3 or values[1] is None or values[2] is None:
            raise TmktError(f"{label}: line {number} has no start and end timestamps in "
                            f"columns 2 and 3")
        start, end = values[1], values[2]
        if end < start:
            raise TmktError(f"{label}: line {number} ends ({end}) before it starts ({start})")
        windows.append((start, end))
    if not windows:
        raise TmktError(f"{label}: no sample rows (one per drawer expected)")
    if len(windows) > DRAWERS:
        raise TmktError(f"{label}: {len(windows)} sample rows, but a character has "
                        f"{DRAWERS} drawers")
    return windows


def _integer(cell: str) -> int | None:
    cell = cell.strip()
    try:
        return int(cell)
    except ValueError:
        pass
    try:
        value = float(cell)
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value == int(value) else None


# --------------------------------------------------------------------------------------------
# Loading (module level so functools.partial of it pickles into worker processes)
# --------------------------------------------------------------------------------------------

_DECODED: OrderedDict[tuple, tuple[np.ndarray, tuple[int, int], bool]] = OrderedDict()
_DECODED_KEEP = 2
"""Recordings kept decoded per process: each file holds 20 samples, read one at a time."""


def _decoded(ref: FileRef) -> tuple[np.ndarray, tuple[int, int], bool]:
    """(events, sensor size, whether time-ordered) of a whole recording, cached."""
    try:
        stat = os.stat(ref.path)
        key = (os.getpid(), ref, stat.st_mtime_ns, stat.st_size)
    except OSError:
        key = None
    if key is not None and key in _DECODED:
        _DECODED.move_to_end(key)
        return _DECODED[key]
    source, name = read_args(ref)
    events, size = read_aedat4(source, name=name)
    ordered = bool(np.all(events["t"][1:] >= events["t"][:-1]))
    if key is not None:
        _DECODED[key] = (events, size, ordered)
        while len(_DECODED) > _DECODED_KEEP:
            _DECODED.popitem(last=False)
    return events, size, ordered


def load_nomniglot_recording(ref: FileRef, start: int, end: int, crop: bool = True
                             ) -> tuple[np.ndarray, tuple[int, int]]:
    """One drawer's sample: the events with ``start <= t < end`` of the character's recording
    (for time-ordered recordings the authors' cut), moved into the crop window when ``crop``."""
    events, size, ordered = _decoded(ref)
    if ordered:
        first, last = np.searchsorted(events["t"], [start, end], side="left")
        sample = events[first:last].copy()
    else:
        sample = events[(events["t"] >= start) & (events["t"] < end)]
    if not crop:
        return sample, size
    top, left, height, width = CROP
    sample["x"] -= left
    sample["y"] -= top
    return sample, (height, width)
