"""``glyphs``: an embedded, Omniglot-like character dataset drawn from the fonts inside
matplotlib, turned into event recordings by tmkt's emulator (docs/datasets.md, "glyphs").

36 classes: the 26 Latin capitals and the 10 Greek capitals that look like no Latin one. Each
class is drawn once by each of 64 "drawers". A drawer is one of 16 font files that ship inside
matplotlib (DejaVu Sans, Sans Mono and Serif in 4 styles each, STIX General in 4) with a hand of
its own (stroke width, slant, rotation, aspect, ink and paper tone: drawn once per drawer);
every drawing adds its own random affine, elastic distortion and background texture. Train and
test are split by drawer: the 4th hand of every font tests (16 drawers, 576 images), the other
48 drawers train (1,728 images), so no test image shares its drawer with a training image.

Nothing is downloaded: the glyphs are rasterised by matplotlib's own FreeType (its wheels bundle
it), so for one matplotlib version the images are the same bytes on every machine. The version,
the FreeType version and each font file's sha256 are recorded in the dataset's info.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from tmkt_cli.config import PrepareConfig
from tmkt_cli.data.datasets.synthetic import emulated_source, emulation_info
from tmkt_cli.data.sources import SourceData, register
from tmkt_cli.errors import TmktError

LATIN = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
GREEK = "ΓΔΘΛΞΠΣΦΨΩ"
CHARACTERS = LATIN + GREEK
"""The classes, in label order."""

FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
)
HANDS_PER_FONT = 4
TEST_HAND = HANDS_PER_FONT - 1
"""Drawer ``d`` writes with font ``d // HANDS_PER_FONT`` and hand ``d % HANDS_PER_FONT``;
the drawers with hand TEST_HAND are the test split."""
DRAWERS = len(FONT_FILES) * HANDS_PER_FONT

IMAGE_SIZE = 32
"""Side of the stored images, in pixels."""
GLYPH_PIXELS = 64
"""Font size (pixels per em) at which the glyphs are rasterised, before distortion."""
GLYPH_HEIGHT = 0.72
"""Height of a glyph's ink as a fraction of the image side, before the random scale."""
SEED = 20_141_015
"""Root of every random draw of the dataset (drawer hands, distortions, textures)."""


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _no_hinting():
    """FreeType's FT_LOAD_NO_HINTING: an enum from matplotlib 3.10 on, an int before."""
    from matplotlib import ft2font

    flags = getattr(ft2font, "LoadFlags", None)
    return flags.NO_HINTING if flags is not None else ft2font.LOAD_NO_HINTING


@cache
def glyph_bitmap(font_file: str, character: str) -> np.ndarray:
    """The character's ink coverage in [0, 1] (float64 ``[h, w]``, cropped to the ink),
    rasterised by matplotlib's FreeType at GLYPH_PIXELS per em without hinting."""
    from matplotlib.ft2font import FT2Font

    font = FT2Font(str(font_dir() / font_file))
    if font.get_char_index(ord(character)) == 0:
        raise TmktError(f"{font_dir() / font_file}: has no glyph for {character!r}; this "
                        f"matplotlib's fonts differ from those the glyphs dataset expects")
    font.set_size(GLYPH_PIXELS, 72)  # points at 72 dpi: pixels per em
    font.set_text(character, 0.0, flags=_no_hinting())  # the outlines as designed
    font.draw_glyphs_to_bitmap(antialiased=True)
    ink = np.asarray(font.get_image(), dtype=np.float64) / 255.0
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    return ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


@dataclass(frozen=True)
class Hand:
    """How one drawer writes: drawn once per drawer."""

    stroke_px: int
    """Grey dilation (> 0) or erosion (< 0) of the glyph, in rasterised pixels."""
    rotation_deg: float
    shear: float
    aspect: float
    ink: float
    paper: float
    texture: float


def drawer_hand(drawer: int) -> Hand:
    rng = np.random.default_rng([SEED, drawer])
    return Hand(stroke_px=int(rng.integers(-1, 4)), rotation_deg=float(rng.normal(0.0, 5.0)),
                shear=float(rng.normal(0.0, 0.12)), aspect=float(rng.uniform(0.85, 1.15)),
                ink=float(rng.uniform(0.7, 1.0)), paper=float(rng.uniform(0.0, 0.25)),
                texture=float(rng.uniform(0.03, 0.15)))


def _stroke(ink: np.ndarray, stroke_px: int) -> np.ndarray:
    from scipy import ndimage

    if stroke_px == 0:
        return ink
    radius = abs(stroke_px)
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    disk = yy**2 + xx**2 <= radius**2 + 0.5
    padded = np.pad(ink, radius + 1)
    morph = ndimage.grey_dilation if stroke_px > 0 else ndimage.grey_erosion
    return morph(padded, footprint=disk)


def draw(character: str, drawer: int) -> np.ndarray:
    """Drawer ``drawer``'s drawing of ``character``: uint8 grey ``[IMAGE_SIZE, IMAGE_SIZE]``,
    light ink on a darker textured paper. A pure function of its arguments."""
    from scipy import ndimage

    hand = drawer_hand(drawer)
    rng = np.random.default_rng([SEED, drawer, ord(character)])
    font_file = FONT_FILES[drawer // HANDS_PER_FONT]
    glyph = _stroke(glyph_bitmap(font_file, character), hand.stroke_px)
    gh, gw = glyph.shape

    # Output pixel centres relative to the image centre, moved by this drawing's elastic
    # field (smooth random displacements, as a hand's wobble), then mapped through the inverse
    # of (rotation, shear, anisotropic scale, translation) into the glyph bitmap.
    n = IMAGE_SIZE
    centre = (n - 1) / 2.0
    oy, ox = np.mgrid[0:n, 0:n].astype(np.float64) - centre
    alpha = rng.uniform(0.5, 1.5)
    smooth = rng.uniform(3.0, 5.0)
    for axis_field in (oy, ox):
        wobble = ndimage.gaussian_filter(rng.normal(size=(n, n)), smooth, mode="reflect")
        axis_field += alpha * wobble / max(wobble.std(), 1e-12)
    angle = math.radians(hand.rotation_deg + rng.normal(0.0, 8.0))
    shear = hand.shear + rng.normal(0.0, 0.08)
    scale = rng.uniform(0.8, 1.05) * GLYPH_HEIGHT * n / gh  # output pixels per glyph pixel
    sy, sx = scale, scale * hand.aspect
    sy = min(sy, 0.95 * n / gh)
    sx = min(sx, 0.95 * n / gw)
    ty, tx = rng.uniform(-2.0, 2.0, 2)
    py, px = oy - ty, ox - tx
    cos, sin = math.cos(angle), math.sin(angle)
    ry, rx = cos * py - sin * px, sin * py + cos * px
    rx = rx - shear * ry
    gy = ry / sy + (gh - 1) / 2.0
    gx = rx / sx + (gw - 1) / 2.0
    # Anti-alias: blur the glyph to the output's sampling pitch before sampling it.
    blurred = ndimage.gaussian_filter(glyph, 0.5 / min(sy, sx))
    coverage = np.clip(ndimage.map_coordinates(blurred, [gy, gx], order=1, mode="constant",
                                               cval=0.0), 0.0, 1.0)

    texture = ndimage.gaussian_filter(rng.normal(size=(n, n)), rng.uniform(0.8, 2.5))
    paper = hand.paper + hand.texture * texture / max(texture.std(), 1e-12)
    grey = np.clip(paper + (hand.ink - paper) * coverage, 0.0, 1.0)
    return np.round(grey * 255.0).astype(np.uint8)


@dataclass(frozen=True)
class GlyphImage:
    """Drawer ``drawer``'s drawing of class ``label`` as uint8 RGB (picklable)."""

    label: int
    drawer: int

    def __call__(self) -> np.ndarray:
        grey = draw(CHARACTERS[self.label], self.drawer)
        return np.repeat(grey[:, :, None], 3, axis=2)


def font_hashes() -> dict[str, str]:
    return {name: hashlib.sha256((font_dir() / name).read_bytes()).hexdigest()
            for name in FONT_FILES}


def in_test(drawer: int) -> bool:
    return drawer % HANDS_PER_FONT == TEST_HAND


@register("glyphs")
def glyphs(root: Path | None, cfg: PrepareConfig) -> SourceData:
    """Characters drawn from matplotlib's fonts, emulated (``root`` is not used)."""
    import matplotlib
    import scipy
    from matplotlib import ft2font

    missing = [name for name in FONT_FILES if not (font_dir() / name).is_file()]
    if missing:
        raise TmktError(f"{font_dir()}: matplotlib {matplotlib.__version__} lacks the font "
                        f"files {', '.join(missing)} the glyphs dataset is drawn from")
    # Training drawers first, then test drawers, each class in label order: emulated_source
    # splits per class by position, so the split falls exactly between the two.
    order = sorted(range(DRAWERS), key=lambda d: (in_test(d), d))
    images = [(f"glyphs/{label:02d}-{CHARACTERS[label]}/drawer{d:02d}", label,
               GlyphImage(label, d))
              for d in order for label in range(len(CHARACTERS))]
    train_fraction = 1.0 - 1.0 / HANDS_PER_FONT
    info = {"source": "characters rasterised from the font files inside matplotlib, with "
                      "per-drawer hands and per-drawing affine, elastic and texture "
                      "distortions (tmkt_cli/data/datasets/glyphs.py)",
            "matplotlib": matplotlib.__version__,
            "freetype": ft2font.__freetype_version__,
            "scipy": scipy.__version__,
            "fonts_sha256": font_hashes(),
            "glyph_seed": SEED,
            "class_names": dict(enumerate(CHARACTERS)),
            **emulation_info(cfg),
            "split": f"by drawer: drawers with hand {TEST_HAND} of each font test "
                     f"({DRAWERS // HANDS_PER_FONT} of {DRAWERS} drawers)"}
    return emulated_source(list(CHARACTERS), images, cfg, info, train_fraction=train_fraction)
