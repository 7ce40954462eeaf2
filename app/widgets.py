"""Editor widgets: a labelled float slider, the image view and the 3D mesh panel."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPalette, QPen
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSizePolicy, QSlider, QStyle, QStyleOptionSlider, QVBoxLayout, QWidget


class MarkedSlider(QSlider):
    """A QSlider that can grey the parts of its groove outside a band (``band``: (lo, hi) in the slider's integer
    units; photo mode's believable turn) and mark one value with a tick (``origin``: the photo's own pose)."""

    def __init__(self, orientation, parent=None):
        super().__init__(orientation, parent)
        self.band: tuple[int, int] | None = None
        self.origin: int | None = None

    def value_x(self, v: int) -> float:
        """The x (widget px) of the handle's centre at integer value ``v``."""
        opt = QStyleOptionSlider()
        self.initStyleOption(opt)
        groove = self.style().subControlRect(QStyle.CC_Slider, opt, QStyle.SC_SliderGroove, self)
        handle = self.style().subControlRect(QStyle.CC_Slider, opt, QStyle.SC_SliderHandle, self)
        span = max(1, groove.width() - handle.width())
        pos = QStyle.sliderPositionFromValue(self.minimum(), self.maximum(), int(v), span, opt.upsideDown)
        return groove.x() + handle.width() / 2 + pos

    def paintEvent(self, ev) -> None:
        super().paintEvent(ev)
        if self.band is None and self.origin is None:
            return
        p = QPainter(self)
        h = self.height()
        if self.band is not None:
            lo, hi = self.band
            x0, x1 = self.value_x(self.minimum()), self.value_x(self.maximum())
            grey = QColor(120, 120, 120, 150)
            if lo > self.minimum():
                xa = self.value_x(lo)
                p.fillRect(QRectF(x0 - 2, h / 2 - 3, xa - x0 + 2, 6), grey)
            if hi < self.maximum():
                xb = self.value_x(hi)
                p.fillRect(QRectF(xb, h / 2 - 3, x1 - xb + 2, 6), grey)
        if self.origin is not None and self.minimum() <= self.origin <= self.maximum():
            x = self.value_x(self.origin)
            pen = QPen(self.palette().color(QPalette.WindowText))
            pen.setWidth(2)
            p.setPen(pen)
            p.drawLine(int(round(x)), h - 5, int(round(x)), h - 1)
        p.end()


class FloatSlider(QWidget):
    """Name | slider | value with unit. Emits ``changed(value, final)``: ``final`` is False while the mouse drags
    (the window renders a small preview and keeps one undo entry open) and True on release or a keyboard step."""

    changed = Signal(float, bool)

    def __init__(self, name: str, lo: float, hi: float, value: float = 0.0, unit: str = "", decimals: int = 2,
                 steps: int = 1000, label: str | None = None, per_unit: float | None = None, marks: bool = False,
                 parent=None):
        super().__init__(parent)
        self.per_unit = per_unit  # steps per unit (degrees: 20, so whole and half degrees lie on the grid)
        if per_unit:
            steps = max(1, int(round((hi - lo) * per_unit)))
        self.name, self.lo, self.hi, self.unit, self.decimals, self.steps = name, lo, hi, unit, decimals, steps
        self._syncing = False
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.label = QLabel(label or name)
        self.label.setFixedWidth(max(140, self.label.sizeHint().width()))  # sliders line up in a column
        # a slider that can show a band and a tick paints in Python: only those that need it (photo mode's pose)
        self.slider = MarkedSlider(Qt.Horizontal) if marks else QSlider(Qt.Horizontal)
        self._true: float | None = None  # a value shown beyond the slider's range (a loaded session, a keyframe)
        self.band: tuple[float, float] | None = None
        self.relative = False  # the value is a change from a marked 0 (photo mode's pose): shown signed
        self.slider.setObjectName(f"slider:{name}")  # accessibility and automation: the control table's key
        self.setObjectName(f"control:{name}")
        self.slider.setRange(0, steps)
        self._set_key_steps()
        self.slider.setFocusPolicy(Qt.StrongFocus)
        self.slider.setAccessibleName(label or name)
        self.slider.setToolTip(f"{label or name}: {lo:g} … {hi:g} {unit}".strip())
        self.label.setBuddy(self.slider)
        self.readout = QLabel()
        self.readout.setMinimumWidth(58)
        self.readout.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
        lay.addWidget(self.label)
        lay.addWidget(self.slider, 1)
        lay.addWidget(self.readout)
        self.slider.valueChanged.connect(self._on_value)
        self.slider.sliderReleased.connect(lambda: self.changed.emit(self.value(), True))
        self.set_value(value)

    def set_range(self, lo: float, hi: float) -> None:
        """New limits (the full-range toggle, a photo's own turn range); the shown value is kept."""
        if (float(lo), float(hi)) == (self.lo, self.hi):
            return
        v = self._true if self._true is not None else self.value()
        self.lo, self.hi = float(lo), float(hi)
        if self.per_unit:
            self.steps = max(1, int(round((self.hi - self.lo) * self.per_unit)))
            self._syncing = True
            try:
                self.slider.setRange(0, self.steps)
                self._set_key_steps()
            finally:
                self._syncing = False
        self.slider.setToolTip(f"{self.label.text()}: {lo:g} … {hi:g} {self.unit}".strip())
        self.set_value(v)
        self.set_marks(self.band, self.relative)

    def _set_key_steps(self) -> None:
        """Arrow keys / Page keys: a whole unit / five (degrees) where the slider has ``per_unit``, else 1 % / 10 %."""
        if self.per_unit:
            self.slider.setSingleStep(max(1, int(round(self.per_unit))))
            self.slider.setPageStep(max(1, int(round(5 * self.per_unit))))
        else:
            self.slider.setSingleStep(max(1, self.steps // 100))
            self.slider.setPageStep(max(1, self.steps // 10))

    def set_marks(self, band: tuple[float, float] | None = None, origin: bool = False) -> None:
        """Grey the groove outside ``band`` (lo, hi in the slider's units; None: no band) and, with ``origin``, tick
        the value 0 (photo mode: the photo's own pose)."""
        self.band = None if band is None else (float(band[0]), float(band[1]))
        self.relative = bool(origin)
        if isinstance(self.slider, MarkedSlider):
            self.slider.band = None if band is None else (self._to_int(band[0]), self._to_int(band[1]))
            self.slider.origin = self._to_int(0.0) if origin and self.lo <= 0 <= self.hi else None
            self.slider.update()
        self._update_readout()

    def _to_int(self, v: float) -> int:
        u = (float(v) - self.lo) / (self.hi - self.lo)
        return int(round(min(1.0, max(0.0, u)) * self.steps))

    def value(self) -> float:
        return self.lo + (self.hi - self.lo) * self.slider.value() / self.steps

    def set_value(self, v: float) -> None:
        """Show a value without emitting ``changed`` (sync from the session); one beyond the range puts the handle at
        the end and the readout says the true value."""
        self._syncing = True
        try:
            self.slider.setValue(self._to_int(v))
        finally:
            self._syncing = False
        step = (self.hi - self.lo) / self.steps
        self._true = float(v) if abs(float(v) - self.value()) > step else None
        self._update_readout()

    def set_user_value(self, v: float) -> None:
        """As if the user moved the slider to ``v`` (used by tests and the keyboard)."""
        self.slider.setValue(self._to_int(v))

    def shown_value(self) -> float:
        """The value the readout shows (the session's, even beyond the slider's range)."""
        return self._true if self._true is not None else self.value()

    def _update_readout(self) -> None:
        v = self.shown_value()
        text = f"{v:.{self.decimals}f}{self.unit}"
        if self.relative:  # a turn: +10.0°, 0.0°, -5.0°
            x = float(text[:len(text) - len(self.unit)])
            text = ("+" if x > 0 else "") + (text.lstrip("-") if x == 0 else text)
        self.readout.setText(text)

    def _on_value(self, _):
        if not self._syncing:
            self._true = None
        self._update_readout()
        if not self._syncing:
            self.changed.emit(self.value(), not self.slider.isSliderDown())


class ImageView(QWidget):
    """Shows the current frame: fitted to the widget (the default) or zoomed (wheel, anchored at the cursor) and
    panned (drag); smooth scaling by default, nearest-neighbour (crisp pixels) on request. A smaller frame of the same
    picture (a drag preview) keeps the view: the view is kept in full-size image pixels (``full_size``).

    Before/after: :meth:`set_before` gives the unedited picture (photo mode: the photo), :meth:`show_before` shows
    it instead of the frame at the same zoom and position."""

    ZOOM_MIN, ZOOM_MAX = 0.05, 16.0  # widget px per full-size image px
    zoomChanged = Signal(float)  # widget px per full-size image px
    choiceClicked = Signal(int)  # the number (0-based) of the face box clicked, while choosing a face

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumSize(192, 192)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.smooth = True
        self.array: np.ndarray | None = None
        self._qimage: QImage | None = None
        self._before: QImage | None = None
        self._before_arr: np.ndarray | None = None
        self._shrunk: tuple | None = None  # (key, QImage): the shown picture area-averaged to its size on screen
        self.showing_before = False
        self.full_size: tuple[int, int] | None = None  # (w, h) of the picture at full resolution
        self.zoom: float | None = None  # None: fit the widget
        self.center: tuple[float, float] = (0.0, 0.0)  # full-size image px shown at the widget's centre
        self._drag = None
        self.choices: list[tuple[float, float, float, float]] = []  # face boxes to click (full-size image px)
        self.setAutoFillBackground(True)
        pal = self.palette()
        pal.setColor(QPalette.Window, Qt.black)
        self.setPalette(pal)
        self.setAccessibleName("face image")
        self.setFocusPolicy(Qt.ClickFocus)
        self.setCursor(Qt.OpenHandCursor)

    @staticmethod
    def _to_qimage(arr: np.ndarray) -> QImage:
        arr = np.ascontiguousarray(arr[..., :3], dtype=np.uint8)
        h, w = arr.shape[:2]
        return QImage(arr.data, w, h, 3 * w, QImage.Format_RGB888).copy()

    def set_image(self, arr: np.ndarray, full_size: tuple[int, int] | None = None) -> None:
        """Show a frame; ``full_size`` (w, h): the full-resolution picture it shows (a drag preview is smaller). A
        picture of another shape goes back to fit."""
        self.array = np.ascontiguousarray(arr[..., :3], dtype=np.uint8)
        h, w = self.array.shape[:2]
        full = tuple(int(x) for x in (full_size or (w, h)))
        if self.full_size is None or abs(full[0] * self.full_size[1] - full[1] * self.full_size[0]) > max(full):
            self.zoom = None  # another shape: fit
            self.center = (full[0] / 2, full[1] / 2)
        elif full != self.full_size:  # the same picture at another full size: keep the view on it
            k = full[0] / self.full_size[0]
            self.center = (self.center[0] * k, self.center[1] * k)
            if self.zoom is not None:
                self.zoom /= k
        self.full_size = full
        self._qimage = self._to_qimage(self.array)
        self.update()

    def set_before(self, arr: np.ndarray | None) -> None:
        """The unedited picture (same full size as the frames), or None when there is none."""
        self._before = None if arr is None else self._to_qimage(arr)
        self._before_arr = None if arr is None else np.ascontiguousarray(arr[..., :3], dtype=np.uint8)
        if self._before is None:
            self.showing_before = False
        self.update()

    @property
    def has_before(self) -> bool:
        return self._before is not None

    def show_before(self, on: bool) -> None:
        self.showing_before = bool(on) and self._before is not None
        self.update()

    def set_smooth(self, on: bool) -> None:
        self.smooth = bool(on)
        self.update()

    def set_choices(self, boxes) -> None:
        """Face boxes (x0, y0, x1, y1) in full-size image px, drawn numbered 1, 2, …; a click inside one emits
        ``choiceClicked``. An empty list ends the choice."""
        self.choices = [tuple(float(v) for v in b) for b in (boxes or [])]
        self.setCursor(Qt.PointingHandCursor if self.choices else Qt.OpenHandCursor)
        self.update()

    def choice_at(self, x: float, y: float) -> int | None:
        if not self.choices or self.full_size is None:
            return None
        ix, iy = self.widget_to_image(x, y)
        for i, (x0, y0, x1, y1) in enumerate(self.choices):
            if x0 <= ix <= x1 and y0 <= iy <= y1:
                return i
        return None

    # -- the view --------------------------------------------------------------------------------------------- #
    def fit_scale(self) -> float:
        if self.full_size is None:
            return 1.0
        return min(self.width() / self.full_size[0], self.height() / self.full_size[1])

    def scale(self) -> float:
        """Widget px per full-size image px now."""
        return self.fit_scale() if self.zoom is None else self.zoom

    def fit(self) -> None:
        self.zoom = None
        if self.full_size is not None:
            self.center = (self.full_size[0] / 2, self.full_size[1] / 2)
        self.zoomChanged.emit(self.scale())
        self.update()

    def actual_size(self) -> None:
        """100 %: one full-size image pixel per screen pixel, around the current centre."""
        self.set_zoom(1.0)

    def set_zoom(self, zoom: float, anchor=None) -> None:
        """Zoom to ``zoom`` widget px per image px, keeping the image point under ``anchor`` (widget px; default:
        the centre) where it is."""
        if self.full_size is None:
            return
        old = self.scale()
        z = float(min(self.ZOOM_MAX, max(self.ZOOM_MIN, zoom)))
        if anchor is not None:
            ax, ay = float(anchor[0]), float(anchor[1])
            ix, iy = self.widget_to_image(ax, ay)
            self.center = (ix - (ax - self.width() / 2) / z, iy - (ay - self.height() / 2) / z)
        elif self.zoom is None:
            self.center = (self.full_size[0] / 2, self.full_size[1] / 2)
        self.zoom = z
        if abs(z - old) > 1e-9:
            self.zoomChanged.emit(z)
        self.update()

    def box_zoom(self, box) -> float:
        """The zoom that shows the region ``box`` (x0, y0, x1, y1 in full-size image px) as large as the widget
        allows."""
        x0, y0, x1, y1 = (float(v) for v in box)
        return min(self.width() / max(1.0, x1 - x0), self.height() / max(1.0, y1 - y0))

    def zoom_to_box(self, box, max_zoom: float | None = None) -> None:
        """Show the region ``box`` (x0, y0, x1, y1 in full-size image px) centred, as large as the widget allows (at
        most ``max_zoom``)."""
        if self.full_size is None:
            return
        x0, y0, x1, y1 = (float(v) for v in box)
        z = self.box_zoom(box) if max_zoom is None else min(self.box_zoom(box), float(max_zoom))
        z = float(min(self.ZOOM_MAX, max(self.ZOOM_MIN, z)))
        self.center = ((x0 + x1) / 2, (y0 + y1) / 2)
        old, self.zoom = self.scale(), z
        if abs(z - old) > 1e-9:
            self.zoomChanged.emit(z)
        self.update()

    def zoom_by(self, factor: float, anchor=None) -> None:
        self.set_zoom(self.scale() * factor, anchor)

    def widget_to_image(self, x: float, y: float) -> tuple[float, float]:
        r = self.target_rect()
        s = r.width() / self.full_size[0]
        return (x - r.x()) / s, (y - r.y()) / s

    def target_rect(self) -> QRectF:
        """Where the full picture lies in widget px (beyond the widget when zoomed in)."""
        if self._qimage is None or self.full_size is None:
            return QRectF()
        fw, fh = self.full_size
        if self.zoom is None:
            s = self.fit_scale()
            return QRectF((self.width() - fw * s) / 2, (self.height() - fh * s) / 2, fw * s, fh * s)
        s = self.zoom
        return QRectF(self.width() / 2 - self.center[0] * s, self.height() / 2 - self.center[1] * s, fw * s, fh * s)

    # -- events ----------------------------------------------------------------------------------------------- #
    def wheelEvent(self, ev) -> None:
        steps = ev.angleDelta().y() / 120.0
        if steps and self.full_size is not None:
            pos = ev.position()
            self.zoom_by(1.25 ** steps, (pos.x(), pos.y()))
        ev.accept()

    def mousePressEvent(self, ev) -> None:
        hit = self.choice_at(ev.position().x(), ev.position().y()) if ev.button() == Qt.LeftButton else None
        if hit is not None:
            self.choiceClicked.emit(hit)
            ev.accept()
            return
        if ev.button() == Qt.LeftButton and self.full_size is not None:
            if self.zoom is None:
                self.zoom = self.fit_scale()
            self._drag = (ev.position().x(), ev.position().y(), self.center)
            self.setCursor(Qt.ClosedHandCursor)
        super().mousePressEvent(ev)

    def mouseMoveEvent(self, ev) -> None:
        if self._drag is not None:
            x0, y0, (cx, cy) = self._drag
            s = self.scale()
            self.center = (cx - (ev.position().x() - x0) / s, cy - (ev.position().y() - y0) / s)
            self.update()
        super().mouseMoveEvent(ev)

    def mouseReleaseEvent(self, ev) -> None:
        self._drag = None
        self.setCursor(Qt.OpenHandCursor)
        super().mouseReleaseEvent(ev)

    def mouseDoubleClickEvent(self, ev) -> None:
        self.fit()

    def _shrunk_image(self, img: QImage, r: QRectF) -> QImage | None:
        """The picture halved by area averaging (cv2.INTER_AREA by 2, fast: ~1 ms for 1 MP) until it is less than
        twice its on-screen size, cached per picture and size; the painter's smooth (bilinear) draw does the rest.
        None when it is shown at half size or more. A bilinear draw alone aliases a fitted 2 MP photo (hair and
        fabric shimmer)."""
        w = int(round(r.width()))
        if w < 1 or 2 * w > img.width():
            return None
        key = (img.cacheKey(), w)
        if self._shrunk is None or self._shrunk[0] != key:
            import cv2

            a = self._before_arr if img is self._before else self.array
            while a.shape[1] >= 2 * w and min(a.shape[:2]) >= 2:
                a = cv2.resize(a, (a.shape[1] // 2, a.shape[0] // 2), interpolation=cv2.INTER_AREA)
            self._shrunk = (key, self._to_qimage(a))
        return self._shrunk[1]

    def paintEvent(self, ev):
        img = self._before if self.showing_before and self._before is not None else self._qimage
        if img is None:
            return
        p = QPainter(self)
        p.setRenderHint(QPainter.SmoothPixmapTransform, self.smooth)
        r = self.target_rect()
        small = self._shrunk_image(img, r) if self.smooth else None
        p.drawImage(r, img if small is None else small)
        if self.showing_before:
            p.setPen(Qt.white)
            p.drawText(self.rect().adjusted(8, 6, -8, -6), Qt.AlignTop | Qt.AlignLeft, "Before")
        if self.choices and self.full_size is not None:
            r = self.target_rect()
            k = r.width() / self.full_size[0]
            font = p.font()
            font.setPointSize(max(10, font.pointSize() + 4))
            font.setBold(True)
            p.setFont(font)
            for i, (x0, y0, x1, y1) in enumerate(self.choices):
                box = QRectF(r.x() + x0 * k, r.y() + y0 * k, (x1 - x0) * k, (y1 - y0) * k)
                pen = QPen(QColor(255, 220, 0))
                pen.setWidth(3)
                p.setPen(pen)
                p.drawRect(box)
                p.drawText(box.adjusted(4, 2, 0, 0), Qt.AlignTop | Qt.AlignLeft, str(i + 1))
        p.end()


@dataclass
class MeshGeometry:
    """What the mesh panel draws for one frame (made off the GUI thread by :meth:`MeshPanel.prepare`), in model
    axes (x the subject's left, y up, z toward the viewer)."""

    positions: np.ndarray  # (V, 3) float32
    normals: np.ndarray | None  # (V, 3) float32, unit; None until the drawing thread needs them (normals_of)
    triangles: np.ndarray  # (F, 3) int32 (the same object while the topology stays)
    landmarks: np.ndarray | None  # (68, 3) float32
    normal_fn: object = None  # engine.io.mesh.VertexNormals of the topology

    def normals_of(self) -> np.ndarray:
        """The unit vertex normals, computed once (by whichever thread draws first)."""
        if self.normals is None:
            self.normals = self.normal_fn(self.positions)
        return self.normals


class MeshPanel(QWidget):
    """The posed mesh (shaded like the image, mouse-rotatable: drag to turn, wheel to zoom, double-click to reset)
    with optional landmarks.

    Nothing heavy happens in the GUI thread: :meth:`prepare` checks the topology and takes the positions (the editor
    calls it in the render thread), :meth:`show_geometry` only hands them to the panel's drawing thread, which
    computes the normals (``engine.io.mesh.VertexNormals``) and draws the picture on the CPU (``engine.render.meshview.draw_mesh``: the compiled rasterizer, no GIL held) and sends it back; the
    paint is one image blit. (An OpenGL view used to stall the GUI thread for tens of milliseconds per paint on a
    software GL such as llvmpipe under Xvfb.) Topology changes (the full head ↔ the face model) re-frame the view."""

    drawn = Signal(object)  # (QImage, landmark pixels or None, the draw's serial): from the drawing thread

    def __init__(self, triangles: np.ndarray, parent=None):
        super().__init__(parent)
        from engine.render.meshview import OrbitCamera

        self.base_triangles = np.ascontiguousarray(triangles, dtype=np.int32)  # the face model's: a frame without
        self.triangles = self.base_triangles  # its own triangles (preview / generator view) uses these
        self.show_landmarks = False
        self.updates = 0  # geometries handed to the panel
        self.draws = 0  # pictures drawn (drawing thread) and shown
        self.draw_ms: list[float] = []  # the drawing thread's time per picture (the last 200)
        self.camera = OrbitCamera()
        self.light = {"azimuth": 25.0, "elevation": 20.0, "intensity": 0.45, "ambient": 0.75,
                      "color": (1.0, 1.0, 1.0)}
        self.reason = None  # kept for callers that explain a missing panel: this one always draws
        self.image: QImage | None = None
        self.array: np.ndarray | None = None  # the last picture drawn (uint8 RGB)
        self._lm_xy: np.ndarray | None = None
        self._last: MeshGeometry | None = None
        self._shown_triangles = None
        self._normals = None  # engine.io.mesh.VertexNormals of the current topology
        self._normals_lock = threading.Lock()
        self._wake = threading.Condition()
        self._want = 0  # serial of the newest draw asked for
        self._done = 0  # serial of the newest draw shown
        self._closed = False
        self._size = (1, 1, 1.0)  # device px (w, h) and ratio when the draw was asked for (read in the GUI thread)
        self._thread: threading.Thread | None = None
        self._drag = None
        self.drawn.connect(self._on_drawn)
        self.setMinimumSize(160, 160)
        self.setAutoFillBackground(True)
        pal = self.palette()
        pal.setColor(QPalette.Window, QColor(38, 40, 46))
        self.setPalette(pal)
        self.setAccessibleName("3D mesh view")
        self.setToolTip("the fitted 3D mesh: drag to turn, wheel to zoom, double-click to reset the view")
        self.setCursor(Qt.OpenHandCursor)

    @property
    def available(self) -> bool:
        return True

    @property
    def busy(self) -> bool:
        """A picture is asked for and not shown yet."""
        return self._done < self._want

    # -- geometry ------------------------------------------------------------------------------------------- #
    def prepare(self, vertices: np.ndarray, landmarks3d: np.ndarray | None = None,
                triangles: np.ndarray | None = None) -> MeshGeometry:
        """Positions and landmarks for a posed mesh (model space; normals follow when drawn); ``triangles`` None: the
        face model's.
        Safe to call from a worker thread."""
        tri = self.base_triangles if triangles is None else triangles
        from engine.io.mesh import VertexNormals

        with self._normals_lock:
            vn = self._normals
            if vn is None or not vn.matches(tri, len(vertices)):
                vn = VertexNormals(tri, len(vertices))
                self._normals = vn
        if tri.max(initial=-1) >= len(vertices):
            raise ValueError(f"triangles index vertex {tri.max()} of a {len(vertices)}-vertex mesh")
        pos = np.ascontiguousarray(vertices, dtype=np.float32)
        lm = None if landmarks3d is None else np.asarray(landmarks3d, np.float32)
        # normals wait for the drawing thread: most drag frames are never drawn (≤ 8 a second are)
        return MeshGeometry(pos, None, vn.triangles if triangles is None else tri, lm, vn)

    def set_mesh(self, vertices: np.ndarray, landmarks3d: np.ndarray | None = None,
                 triangles: np.ndarray | None = None) -> None:
        """Show a posed mesh; ``triangles`` when it is not the face model's (photo mode: the fitted full head)."""
        self.show_geometry(self.prepare(vertices, landmarks3d, triangles))

    def show_geometry(self, g: MeshGeometry) -> None:
        """Take a prepared frame (GUI thread: no drawing here); a new topology re-frames the view."""
        new_topology = self._shown_triangles is None or (
            g.triangles is not self._shown_triangles and not np.array_equal(g.triangles, self._shown_triangles))
        if new_topology:
            self.triangles = np.ascontiguousarray(g.triangles, dtype=np.int32)
            self.camera.frame(g.positions)
        self._shown_triangles = g.triangles
        self._last = g
        self.updates += 1
        if self.isVisible():
            self.request_draw()  # hidden: showEvent draws the last one

    # -- drawing (the panel's own thread) ------------------------------------------------------------------- #
    def request_draw(self) -> None:
        """Ask the drawing thread for a new picture (the newest request wins; never blocks)."""
        if self._last is None or self._closed:
            return
        with self._wake:
            self._want += 1
            dpr = max(1.0, float(self.devicePixelRatioF()))  # a HiDPI screen: the picture at device pixels
            self._size = (max(1, round(self.width() * dpr)), max(1, round(self.height() * dpr)), dpr)
            self._wake.notify()
        if self._thread is None:
            self._thread = threading.Thread(target=self._draw_loop, name="discoface-mesh", daemon=True)
            self._thread.start()

    def _draw_loop(self) -> None:
        import dataclasses

        from engine.render.meshview import draw_mesh

        drawn = 0
        while True:
            with self._wake:
                while self._want == drawn and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                serial = self._want
                g, cam = self._last, dataclasses.replace(self.camera)
                light, (w, h, dpr) = dict(self.light), self._size
            drawn = serial
            t0 = time.perf_counter()
            try:
                if g.landmarks is None:
                    img, lm = draw_mesh(g.positions, g.normals_of(), g.triangles, cam, w, h, light), None
                else:  # the landmarks the head hides are not drawn
                    img, xy, seen = draw_mesh(g.positions, g.normals_of(), g.triangles, cam, w, h, light,
                                              g.landmarks)
                    lm = xy[seen]
            except Exception:  # the image view still works; say why once per failure
                import traceback

                traceback.print_exc()
                continue
            self.draw_ms.append(1000 * (time.perf_counter() - t0))
            del self.draw_ms[:-200]
            qimg = ImageView._to_qimage(img)
            qimg.setDevicePixelRatio(dpr)
            try:
                self.drawn.emit((qimg, img, None if lm is None else lm / dpr, serial))
            except RuntimeError:  # the panel was deleted without stop(): nothing left to draw for
                return

    def _on_drawn(self, item) -> None:
        qimg, arr, lm, serial = item
        if serial < self._done:
            return
        self.image, self.array, self._lm_xy, self._done = qimg, arr, lm, serial
        self.draws += 1
        self.update()

    def stop(self) -> None:
        """End the drawing thread (the window's close)."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(2.0)

    def paintEvent(self, ev) -> None:
        if self.image is None:
            return
        p = QPainter(self)
        p.setRenderHint(QPainter.SmoothPixmapTransform, True)
        dpr = self.image.devicePixelRatio()
        same = round(self.image.width() / dpr) == self.width() and round(self.image.height() / dpr) == self.height()
        if same:
            p.drawImage(0, 0, self.image)
        else:  # resized: the last picture stretched until the new one arrives
            p.drawImage(QRectF(0, 0, self.width(), self.height()), self.image)
        if self.show_landmarks and self._lm_xy is not None and same:
            p.setPen(Qt.NoPen)
            p.setBrush(QColor(50, 255, 80))
            for x, y in self._lm_xy:
                p.drawEllipse(QRectF(float(x) - 2.5, float(y) - 2.5, 5.0, 5.0))
        p.end()

    def showEvent(self, ev) -> None:
        super().showEvent(ev)
        self.request_draw()  # frames that came while hidden: draw the last one

    def resizeEvent(self, ev) -> None:
        super().resizeEvent(ev)
        if self.isVisible():
            self.request_draw()

    # -- the view: drag to turn, wheel to zoom, double-click to reset -------------------------------------- #
    def mousePressEvent(self, ev) -> None:
        if ev.button() == Qt.LeftButton:
            self._drag = (ev.position().x(), ev.position().y(), self.camera.azimuth, self.camera.elevation)
            self.setCursor(Qt.ClosedHandCursor)
        super().mousePressEvent(ev)

    def mouseMoveEvent(self, ev) -> None:
        if self._drag is not None:
            x0, y0, az, el = self._drag
            self.turn_view(az - 0.5 * (ev.position().x() - x0), el + 0.5 * (ev.position().y() - y0))
        super().mouseMoveEvent(ev)

    def mouseReleaseEvent(self, ev) -> None:
        self._drag = None
        self.setCursor(Qt.OpenHandCursor)
        super().mouseReleaseEvent(ev)

    def wheelEvent(self, ev) -> None:
        steps = ev.angleDelta().y() / 120.0
        if steps:
            self.camera.distance = float(min(400.0, max(8.0, self.camera.distance * 0.87 ** steps)))
            self.request_draw()
        ev.accept()

    def mouseDoubleClickEvent(self, ev) -> None:
        self.reset_view()

    def turn_view(self, azimuth: float, elevation: float) -> None:
        """Look from ``azimuth`` degrees around the vertical axis and ``elevation`` above the horizon."""
        self.camera.azimuth = float((azimuth + 180.0) % 360.0 - 180.0)
        self.camera.elevation = float(min(89.0, max(-89.0, elevation)))
        self.request_draw()

    def reset_view(self) -> None:
        from engine.render.meshview import OrbitCamera

        self.camera = OrbitCamera()
        if self._last is not None:
            self.camera.frame(self._last.positions)
        self.request_draw()

    def set_light(self, azimuth: float, elevation: float, intensity: float, ambient: float, color=(1.0, 1.0, 1.0),
                  redraw: bool = True, **_ignored) -> None:
        """Light the mesh like the image (call with ``**session.light_params()``); ``redraw=False``: a new geometry
        follows at once and draws with it."""
        light = {"azimuth": float(azimuth), "elevation": float(elevation), "intensity": float(intensity),
                 "ambient": float(ambient), "color": tuple(float(c) for c in (list(color) + [1.0, 1.0, 1.0])[:3])}
        if light == self.light:
            return
        self.light = light
        if redraw and self.isVisible():
            self.request_draw()

    def set_landmarks_visible(self, on: bool) -> None:
        self.show_landmarks = bool(on)
        self.update()
