"""Every pixel mode an image file can hold becomes the right 8-bit RGB, checked on hand-made files.

PNGs are written byte by byte here (`png_file`), not by Pillow, so the file holds exactly the
samples the test names; JPEG (CMYK, greyscale) and WebP files come from Pillow's encoders at
lossless settings. Each file is 8 x 8, a row of four samples tiled, read through `ImageFolder`
at resolution 8 (the resize is then the identity), so what is checked is the decoding alone.
"""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from vqbench.data import ImageFolder, to_uint8

WHITE = 255


def png_file(samples: np.ndarray, color_type: int, depth: int = 8, palette=None, trns=None):
    """A PNG of `samples` (H, W[, channels]) with the given colour type and bit depth."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    height, width = samples.shape[:2]
    if depth == 1:  # pack 8 pixels a byte, most significant bit first
        rows = [np.packbits(samples[y].astype(np.uint8)).tobytes() for y in range(height)]
    else:
        dtype = ">u2" if depth == 16 else "u1"
        rows = [samples[y].astype(dtype).tobytes() for y in range(height)]
    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
    if palette is not None:
        out += chunk(b"PLTE", bytes(np.asarray(palette, np.uint8).reshape(-1)))
    if trns is not None:
        out += chunk(b"tRNS", trns)
    data = zlib.compress(b"".join(b"\x00" + row for row in rows))
    return out + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def tiled(row) -> np.ndarray:
    """Four samples (each a scalar or a tuple of channels) tiled to 8 x 8."""
    row = np.asarray(row)
    return np.tile(row[None], (8, 2) + (1,) * (row.ndim - 1))


def over_white(rgb, alpha):
    """Hand formula: `c a / 255 + 255 (1 - a / 255)`, rounded."""
    return [int(np.floor(c * alpha / 255 + WHITE * (1 - alpha / 255) + 0.5)) for c in rgb]


def read_back(folder, name: str, data: bytes) -> np.ndarray:
    (folder / name).write_bytes(data)
    image = ImageFolder(folder, 8, train=False)[0]
    return to_uint8(image).permute(1, 2, 0).numpy()


def assert_pixels(pixels: np.ndarray, expected_row, tolerance: int = 0) -> None:
    expected = tiled(np.asarray(expected_row, np.int64))
    assert pixels.shape == (8, 8, 3)
    assert np.abs(pixels.astype(np.int64) - expected).max() <= tolerance, pixels[0, :4]


GREY_16 = [0, 32896, 33023, 65535]  # 128 * 257 = 32896 (mid-grey), 0x80ff keeps 0x80

CASES = {
    "L: 8-bit grey": (
        lambda: png_file(tiled([0, 77, 128, 255]), 0),
        [[0] * 3, [77] * 3, [128] * 3, [255] * 3],
    ),
    "1: 1-bit": (
        lambda: png_file(tiled([1, 0, 0, 1]), 0, depth=1),
        [[255] * 3, [0] * 3, [0] * 3, [255] * 3],
    ),
    "I;16: 16-bit grey is its high byte, mid-grey stays mid-grey": (
        lambda: png_file(tiled(GREY_16), 0, depth=16),
        [[0] * 3, [128] * 3, [128] * 3, [255] * 3],
    ),
    "RGB 16-bit: the high byte too": (
        lambda: png_file(tiled([(0, 32896, 65535)] * 4), 2, depth=16),
        [[0, 128, 255]] * 4,
    ),
    "LA 16-bit: high bytes, then alpha over white": (
        lambda: png_file(tiled([(32896, 65535), (32896, 0)] * 2), 4, depth=16),
        [[128] * 3, [WHITE] * 3] * 2,
    ),
    "P: palette colours": (
        lambda: png_file(tiled([0, 1, 2, 1]), 3, palette=[(255, 0, 0), (0, 128, 255), (7, 8, 9)]),
        [[255, 0, 0], [0, 128, 255], [7, 8, 9], [0, 128, 255]],
    ),
    "P with tRNS: per-entry alpha over white": (
        lambda: png_file(
            tiled([0, 1, 2, 1]),
            3,
            palette=[(255, 0, 0), (0, 128, 255), (200, 100, 0)],
            trns=bytes([255, 0, 128]),
        ),
        [[255, 0, 0], [WHITE] * 3, over_white((200, 100, 0), 128), [WHITE] * 3],
    ),
    "LA: grey and alpha over white": (
        lambda: png_file(tiled([(200, 255), (200, 0), (100, 128), (0, 64)]), 4),
        [[200] * 3, [WHITE] * 3, over_white((100,) * 3, 128), over_white((0,) * 3, 64)],
    ),
    "RGBA: alpha over white (the colour under alpha 0 is not the picture)": (
        lambda: png_file(
            tiled([(10, 20, 30, 255), (10, 20, 30, 0), (200, 0, 0, 128), (0, 0, 0, 1)]), 6
        ),
        [[10, 20, 30], [WHITE] * 3, over_white((200, 0, 0), 128), over_white((0, 0, 0), 1)],
    ),
    "L with a transparent grey (tRNS key)": (
        lambda: png_file(tiled([10, 20, 30, 20]), 0, trns=struct.pack(">H", 20)),
        [[10] * 3, [WHITE] * 3, [30] * 3, [WHITE] * 3],
    ),
    "RGB with a transparent colour (tRNS key)": (
        lambda: png_file(
            tiled([(1, 2, 3), (4, 5, 6), (1, 2, 3), (7, 8, 9)]),
            2,
            trns=struct.pack(">HHH", 4, 5, 6),
        ),
        [[1, 2, 3], [WHITE] * 3, [1, 2, 3], [7, 8, 9]],
    ),
    "16-bit grey with a transparent value (tRNS key)": (
        lambda: png_file(tiled(GREY_16), 0, depth=16, trns=struct.pack(">H", 65535)),
        [[0] * 3, [128] * 3, [128] * 3, [WHITE] * 3],
    ),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_png_modes(tmp_path, case):
    make, expected = CASES[case]
    assert_pixels(read_back(tmp_path, "x.png", make()), expected)


def pillow_file(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def test_cmyk_jpeg_is_the_standard_conversion(tmp_path):
    inks = [(0, 0, 0, 0), (255, 0, 0, 0), (50, 100, 150, 60), (0, 0, 0, 255)]
    image = Image.fromarray(tiled(inks).astype(np.uint8), "CMYK")
    data = pillow_file(image, "JPEG", quality=100)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    expected = [[round((255 - c) * (255 - ink[3]) / 255) for c in ink[:3]] for ink in inks]
    assert_pixels(read_back(tmp_path, "x.jpg", data), expected, tolerance=2)


def test_greyscale_jpeg_and_transparent_webp(tmp_path):
    grey = Image.fromarray(tiled([0, 77, 128, 255]).astype(np.uint8), "L")
    pixels = read_back(tmp_path, "a.jpg", pillow_file(grey, "JPEG", quality=100))
    assert_pixels(pixels, [[0] * 3, [77] * 3, [128] * 3, [255] * 3], tolerance=2)
    (tmp_path / "a.jpg").unlink()
    rgba = Image.fromarray(tiled([(10, 20, 30, 255), (10, 20, 30, 0)] * 2).astype(np.uint8))
    pixels = read_back(tmp_path, "b.webp", pillow_file(rgba, "WEBP", lossless=True))
    assert_pixels(pixels, [[10, 20, 30], [WHITE] * 3] * 2)


def test_32_bit_integer_images_are_read_as_16_bit_grey():
    """Older Pillow reads 16-bit grey PNGs as mode `I` (this one cannot write such a PNG)."""
    from vqbench.data import rgb_pixels

    values = np.array([[-5, 32896, 70000, 65535]], np.int32)
    pixels = rgb_pixels(Image.fromarray(values))
    assert Image.fromarray(values).mode == "I"
    assert pixels[0, :, 0].tolist() == [0, 128, 255, 255] and (pixels == pixels[..., :1]).all()


def test_a_16_bit_mid_grey_is_mid_grey_in_the_model_range(tmp_path):
    (tmp_path / "grey.png").write_bytes(png_file(np.full((8, 8), 32896), 0, depth=16))
    image = ImageFolder(tmp_path, 8, train=False)[0]
    assert image.shape == (3, 8, 8)
    assert image.abs().max() < 0.01  # 128 / 127.5 - 1; it was +1.0 (saturated white)
