"""Still images in as RGB uint8, as a viewer shows them: EXIF orientation applied, 16-bit and palette images
converted by value, transparency composited on white, and images too large to decode refused by name."""
from __future__ import annotations

import warnings

import numpy as np

from emo_jax.errors import VideoError
from emo_jax.paths import require_file

# 8192 x 8192: far more than any portrait needs (frames are 512 px), and 192 MiB as RGB. PIL's own guard
# warns at 89 megapixels and raises at twice that, with a message that names neither the file nor a fix.
MAX_PIXELS = 8192 * 8192


def _to_rgb8(image) -> np.ndarray:
    """RGB uint8 [H, W, 3] of a PIL image of any mode, scaling high-bit-depth values instead of clipping them."""
    from PIL import Image

    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # PIL's convert("RGB") clips these at 255, so a 16-bit grey image comes out near white.
        values = np.asarray(image).astype(np.float64)
        full_scale = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        if image.mode == "F" and values.max(initial=0) <= 1.0:
            full_scale = 1.0
        grey = np.clip(np.rint(values / full_scale * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def read_image(path: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """RGB uint8 [H, W, 3] of an image file, upright as its EXIF orientation says."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    require_file(path, "image", "pass the path of a png or jpg portrait", VideoError)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size  # read from the header; no pixels are decoded yet
                if width * height > max_pixels:
                    raise VideoError(f"image {path!r} is {width}x{height} ({width * height / 1e6:.0f} megapixels), "
                                     f"more than the {max_pixels / 1e6:.0f} megapixels emo-jax decodes; downscale it "
                                     "(a portrait needs no more than a few times the frame size)")
                return _to_rgb8(ImageOps.exif_transpose(image))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise VideoError(f"image {path!r} is too large to decode safely ({e}); downscale it") from e
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise VideoError(f"cannot read {path!r} as an image ({e}); pass a png or jpg portrait") from e
