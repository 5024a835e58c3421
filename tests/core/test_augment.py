"""Pixel views: the spec parser, the index maps against an independent oracle (NumPy's own flip
and edge padding on 32 x 32 x 3 images), the batched gather and the random draws."""

from __future__ import annotations

import numpy as np
import pytest

from cifarlin.core import augment
from cifarlin.core.augment import Augment, parse_augment
from cifarlin.errors import ConfigError


def oracle(image: np.ndarray, flip: bool, dx: int, dy: int) -> np.ndarray:
    """The view as the definition says, through NumPy on the (3, 32, 32) cube: mirror, then pad
    by edge replication and crop so the content moves dx right and dy down."""
    cube = image.reshape(3, 32, 32)
    if flip:
        cube = cube[:, :, ::-1]
    t = 8
    padded = np.pad(cube, ((0, 0), (t, t), (t, t)), mode="edge")
    return padded[:, t - dy : t - dy + 32, t - dx : t - dx + 32].reshape(-1)


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (6, 3072), dtype=np.uint8)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("flip", Augment(flip=True)),
        ("translate:2", Augment(translate=2)),
        ("flip,translate:1", Augment(True, 1)),
        (" Translate:1 , FLIP ", Augment(True, 1)),
        ("none", Augment()),
        ("", Augment()),
    ],
)
def test_parse_reads_every_form_and_round_trips(text, want):
    """Catches a spec the parser misreads, or a canonical text (stored in model files) that it
    cannot read back."""
    assert parse_augment(text) == want
    assert parse_augment(str(want)) == want


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("flop", "use 'flip'"),
        ("translate", "largest shift"),
        ("translate:0", "1 to 8"),
        ("translate:9", "1 to 8"),
        ("translate:99999999999999", "1 to 8"),
        ("flip:1", "no number"),
        ("flip,flip", "twice"),
        ("flip,", "use 'flip'"),
    ],
)
def test_parse_refuses_bad_specs_naming_the_field(text, why):
    """Catches a typo silently training without augmentation, and messages that do not name the
    option (the command line maps the field 'augment' to its flag)."""
    with pytest.raises(ConfigError, match=why) as e:
        parse_augment(text)
    assert str(e.value).startswith(f"augment={text!r}: ")


def test_views_count_and_order():
    """Catches a miscounted view set (the solver's n would be wrong) or a lost identity view."""
    aug = Augment(True, 1)
    maps = augment.views(aug)
    assert len(maps) == aug.n_views == 18
    np.testing.assert_array_equal(maps[0], np.arange(3072))
    assert len({m.tobytes() for m in maps}) == 18


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize(("dx", "dy"), [(0, 0), (1, 0), (-1, 0), (0, 2), (-2, -1), (3, 3)])
def test_index_maps_equal_the_oracle(images, flip, dx, dy):
    """Catches swapped axes (dx moving rows), a wrong shift direction, wrap-around instead of
    edge replication, channels mixed by the flip, or shift-then-flip instead of flip-then-shift."""
    src = augment.view_index(flip, dx, dy)
    for image in images:
        np.testing.assert_array_equal(image[src], oracle(image, flip, dx, dy))


def test_view_set_is_closed_under_the_flip():
    """The solver's flip-symmetric shortcut assumes that flipping any view gives another view of
    the set; catches an asymmetric shift set."""
    maps = {m.tobytes() for m in augment.views(Augment(True, 2))}
    f = augment.flip_index()
    for m in augment.views(Augment(True, 2)):
        assert m[f].tobytes() in maps


def test_apply_gathers_each_image_its_own_view(images):
    """Catches one image's view applied to the whole batch, flips and shifts paired with the
    wrong images, dx and dy swapped, or a dtype change."""
    flips = np.array([False, True, True, False, True, False])
    shifts = np.array([[0, 0], [1, -1], [-2, 0], [0, 3], [2, 2], [-1, 1]])
    out = augment.apply(images, flips, shifts)
    assert out.dtype == np.uint8 and out.shape == images.shape
    for i in range(len(images)):
        np.testing.assert_array_equal(out[i], oracle(images[i], flips[i], *shifts[i]))


def test_apply_refuses_mismatched_arguments(images):
    """Catches a silent broadcast of too few flips or shifts over the batch."""
    with pytest.raises(ConfigError):
        augment.apply(images, np.zeros(5, bool), np.zeros((6, 2), int))
    with pytest.raises(ConfigError):
        augment.apply(images, np.zeros(6, bool), np.zeros((6, 2), float))
    with pytest.raises(ConfigError, match="at most 8"):
        augment.apply(images, np.zeros(6, bool), np.full((6, 2), 9))


def test_draw_consumes_nothing_without_augmentation():
    """A run without --augment must draw the same numbers as before augmentation existed."""
    rng = np.random.default_rng(3)
    flips, shifts = augment.draw(rng, 5, Augment())
    assert not flips.any() and not shifts.any()
    assert rng.bit_generator.state == np.random.default_rng(3).bit_generator.state


def test_draw_covers_the_views_evenly_and_reproducibly():
    """Catches a shift range off by one (never reaching +t), flips never drawn, or draws that do
    not come from the run's generator alone."""
    aug = Augment(True, 1)
    flips, shifts = augment.draw(np.random.default_rng(0), 18_000, aug)
    again = augment.draw(np.random.default_rng(0), 18_000, aug)
    np.testing.assert_array_equal(flips, again[0])
    np.testing.assert_array_equal(shifts, again[1])
    combos = flips * 9 + (shifts[:, 0] + 1) * 3 + (shifts[:, 1] + 1)
    counts = np.bincount(combos, minlength=18)
    assert len(counts) == 18 and counts.min() > 800 and counts.max() < 1200  # 1000 each


def test_views_of_chosen_rows_equal_the_views_of_those_rows_copied():
    """Bug: the gather straight from the whole set picks other rows than the batch's."""
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (40, 3072), dtype=np.uint8)
    rows = rng.permutation(40)[:7]
    flips, shifts = augment.draw(rng, 7, augment.parse_augment("flip,translate:3"))
    expected = augment.apply(images[rows].copy(), flips, shifts)
    assert np.array_equal(augment.apply(images, flips, shifts, rows), expected)
    assert np.array_equal(
        augment.apply(images, flips, shifts, slice(5, 12)), augment.apply(images[5:12], flips, shifts)
    )
