"""A corpus of awkward photo inputs, made on the fly from the ffhq test fixtures (nothing downloaded or committed).

``make_corpus(folder, ffhq_image_path)`` returns {case: (path, expected)} with expected "ok" (a face must be found)
or "error" (one clear message, nothing written).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def make_corpus(folder: Path, face_png: Path, other_png: Path) -> dict[str, tuple[Path, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    face = Image.open(face_png).convert("RGB")
    other = Image.open(other_png).convert("RGB")
    cases: dict[str, tuple[Path, str]] = {}

    def save(name, img, expected, **kw):
        p = folder / name
        img.save(p, **kw)
        cases[name.split(".")[0]] = (p, expected)

    rng = np.random.default_rng(0)
    save("not_a_face.png", Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)), "error")
    save("no_face.png", Image.new("RGB", (300, 200), (120, 160, 200)), "error")
    two = Image.new("RGB", (512 + 64, 256), (90, 90, 90))
    two.paste(face, (0, 0))
    two.paste(other.resize((160, 160)), (512 - 96 + 64, 48))
    save("two_faces.png", two, "ok")
    save("tiny.png", face.resize((20, 20)), "error")
    save("huge.jpg", face.resize((8000, 8000), Image.BILINEAR), "ok", quality=80)
    save("grayscale.png", face.convert("L"), "ok")
    rgba = face.convert("RGBA")
    rgba.putalpha(200)
    save("rgba.png", rgba, "ok")
    save("cmyk.jpg", face.convert("CMYK"), "ok", quality=92)
    rotated = face.rotate(90, expand=True)  # stored sideways; EXIF orientation 6 says "rotate 90 CW to view"
    exif = Image.Exif()
    exif[0x0112] = 6
    save("exif_rotated.jpg", rotated, "ok", exif=exif, quality=92)
    buf = io.BytesIO()
    face.save(buf, format="JPEG", quality=90)
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    cases["truncated"] = (folder / "truncated.jpg", "error")
    (folder / "text.png").write_text("this is not an image\n")
    cases["text"] = (folder / "text.png", "error")
    (folder / "empty.jpg").write_bytes(b"")
    cases["empty"] = (folder / "empty.jpg", "error")
    cases["missing"] = (folder / "does_not_exist.jpg", "error")
    return cases
