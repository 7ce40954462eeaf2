"""The frame renderer: ``FrameRenderer.render(snapshot) -> Frame``, with its caches inside.

Three ways to draw a snapshot, picked by ``view``:

* ``"photo"`` (photo mode, the snapshot carries a fitted photo): the photo itself, warped/relit to the snapshot's
  coefficients at its own resolution (``engine.photo.renderer.PhotoRenderer``; a smaller frame while dragging);
* ``"generator"``: the trained generator's image of the coefficients + noise (+ an embedding's style offsets);
* ``"preview"``: the analytic 3DMM render R(λ), built from the public render stages (camera → rasterizer →
  shading). The model-space shape (vertices + normals) is cached on (identity, expression), so pose and light
  drags skip the blendshape sum and the normals.

``"auto"`` is photo mode when there is a photo, else the generator when there is one, else the preview.
Every frame carries the posed mesh and its landmarks for the editor's mesh panel.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from engine.face.model import Coefficients, FaceModel
from engine.io.files import to_uint8_image
from engine.render import Camera, interpolate, rasterize_forward, rotation_matrix, shade
from engine.editing.state import Snapshot
from engine.photo.renderer import PhotoRenderer, limits_note

VIEWS = ("auto", "photo", "generator", "preview")
DRAG_MAX_SIDE = 512  # photo mode: the longest side of a drag preview frame


@dataclass
class Frame:
    image: np.ndarray  # (H, W, 3) uint8
    vertices: np.ndarray  # (V, 3) float32, posed mesh (cm; y up, z toward the viewer)
    landmarks: np.ndarray  # (68, 2) pixel coordinates in ``image`` (x right, y down)
    landmarks3d: np.ndarray  # (68, 3) posed landmark vertices (same space as ``vertices``)
    mode: str  # "photo" | "generator" | "preview"
    ms: float  # wall time of the render
    size: int  # the longest side of ``image``
    triangles: np.ndarray | None = None  # (F, 3) when the mesh is not the face model's (photo mode: the full head)
    note: str | None = None  # a limit worth saying (photo mode: outside the believable range)


class FrameRenderer:
    """Draws snapshots. Thread-safe enough for one render thread plus one export thread: caches are replaced
    with a single assignment and read once per call."""

    def __init__(self, model: FaceModel, generator=None):
        self.model = model
        self.generator = generator
        self.camera = Camera.canonical(model.mean, model.lm68)
        self._shape: tuple | None = None  # (identity, expression, vertices, normals) in model space
        self._photo: tuple | None = None  # (PhotoSource, PhotoRenderer)

    @property
    def native_size(self) -> int:
        return int(self.generator.resolution) if self.generator is not None else 256

    def view_for(self, snap: Snapshot, view: str = "auto") -> str:
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r}; one of {', '.join(VIEWS)}")
        if view == "photo" and snap.photo is None:
            view = "auto"
        if view == "generator" and self.generator is None:
            view = "preview"
        if view == "auto":
            view = "photo" if snap.photo is not None else ("generator" if self.generator is not None else "preview")
        return view

    def render(self, snap: Snapshot, size: int | None = None, view: str = "auto", final: bool = True,
               background: float = 0.35) -> Frame:
        t0 = time.perf_counter()
        view = self.view_for(snap, view)
        c = snap.coeffs[0:1]
        with torch.no_grad():
            if view == "photo":
                frame = self._photo_frame(snap, size, final)
            else:
                size = int(size or self.native_size)
                if view == "generator":
                    img = self._generator_image(snap, size, final)
                    rot = rotation_matrix(c.pose)
                    v_model = self.model.vertices(c)
                    verts = v_model @ rot.transpose(1, 2)
                    lms = self.camera.project(self.camera.to_camera(v_model[:, self.model.lm68], c.pose), size)
                else:
                    img, verts, lms = self._preview(c, size, background)
                v = verts[0].float().numpy()
                frame = Frame(to_uint8_image(img[0]), v, lms[0].float().numpy(), v[self.model.lm68.numpy()], view,
                              0.0, size)
        frame.ms = (time.perf_counter() - t0) * 1000.0
        return frame

    # -- generator ------------------------------------------------------------------------------------------ #
    def _generator_image(self, snap: Snapshot, size: int, final: bool = True) -> torch.Tensor:
        """G's image at ``size``; the upsampler (when the generator has one) runs on final frames only, a drag
        frame is G's own image resized (a third of the time). Enlarged bicubic, shrunk with antialiasing."""
        gen, c = self.generator, snap.coeffs[0:1]
        kw = {} if final or getattr(gen, "sr", None) is None else {"upsample": False}
        if snap.w_offsets is not None:
            img = gen.synthesize_ws(gen.ws(c, snap.noise) + snap.w_offsets, **kw)
        else:
            img = gen.synthesize(c, snap.noise, truncation_psi=snap.psi, **kw)
        img = img.clamp(0, 1)
        if img.shape[-1] < size:  # enlarged (a drag frame's G image, an export above the native size): bicubic,
            # crisper than bilinear (a 128 px face shown at 340 px: Laplacian energy 0.0048 -> 0.0062)
            img = F.interpolate(img, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
        elif img.shape[-1] > size:
            img = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False,
                                antialias=True).clamp(0, 1)
        return img

    # -- 3DMM preview --------------------------------------------------------------------------------------- #
    def _model_shape(self, c: Coefficients):
        shape = self._shape  # one read: another thread may replace it
        if shape is None or not (torch.equal(shape[0], c.identity) and torch.equal(shape[1], c.expression)):
            v = self.model.vertices(c)
            shape = (c.identity.clone(), c.expression.clone(), v, self.model.vertex_normals(v))
            self._shape = shape
        return shape[2], shape[3]

    def _preview(self, c: Coefficients, size: int, background: float):
        verts, normals_model = self._model_shape(c)
        cam = self.camera.to_camera(verts, c.pose)
        screen = self.camera.project(cam, size)
        rot = rotation_matrix(c.pose)
        colors = shade(self.model.albedo(c), normals_model @ rot.transpose(1, 2), c.light)
        frags = rasterize_forward(screen, cam[..., 2], self.model.triangles, size)
        image = interpolate(colors, frags, self.model.triangles, background).clamp(0, 1)
        return image, verts @ rot.transpose(1, 2), screen[:, self.model.lm68]

    # -- photo mode ----------------------------------------------------------------------------------------- #
    def photo_renderer(self, source, renderer: PhotoRenderer | None = None) -> PhotoRenderer:
        """The photo renderer of ``source`` (its source-side work is done once per photo, then cached). Its drag
        preview renderer is built here too (~0.5 s), so the session's open-photo job pays it, not the first drag.
        ``renderer``: one made already for ``source.fit`` (the command line's, from its photo cache), used as is
        (its preview renderer made on first use)."""
        cached = self._photo
        if renderer is not None:
            cached = (source, renderer)
            self._photo = cached
        elif cached is None or cached[0] is not source:
            pr = PhotoRenderer(source.fit, model=self.model)
            pr.preview_renderer()
            cached = (source, pr)
            self._photo = cached
        return cached[1]

    def _photo_frame(self, snap: Snapshot, size: int | None, final: bool) -> Frame:
        source = snap.photo
        pr = self.photo_renderer(source)
        max_side = int(size) if size else (None if final else DRAG_MAX_SIDE)
        c = snap.coeffs[0:1]
        pf = pr.render(c, max_side=max_side)
        verts = np.asarray(pf.vertices, np.float32)
        return Frame(pf.image, verts, np.asarray(pf.landmarks, np.float32), verts[self.model.lm68.numpy()], "photo",
                     0.0, int(max(pf.image.shape[:2])), triangles=pr.head.triangles.numpy(),
                     note=limits_note(source.fit, c))
