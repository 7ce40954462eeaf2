"""The image view (issue 22): wheel zoom anchored at the cursor, drag pan, fit / 100 %, smooth scaling by default,
a smaller frame of the same picture keeps the view, before/after at the same zoom."""
import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt  # noqa: E402
from PySide6.QtGui import QMouseEvent, QWheelEvent  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402


@pytest.fixture
def view(qtbot):
    from app.widgets import ImageView

    v = ImageView()
    qtbot.addWidget(v)
    v.resize(400, 300)
    v.show()
    img = np.zeros((200, 400, 3), np.uint8)
    img[:, :200] = (255, 0, 0)  # left half red, right half blue
    img[:, 200:] = (0, 0, 255)
    v.set_image(img)
    return v


def wheel(v, x, y, steps=1):
    pos = QPointF(x, y)
    ev = QWheelEvent(pos, v.mapToGlobal(pos), QPoint(0, 0), QPoint(0, 120 * steps), Qt.NoButton, Qt.NoModifier,
                     Qt.NoScrollPhase, False)
    QApplication.sendEvent(v, ev)


def mouse(v, kind, x, y, buttons=Qt.LeftButton):
    pos = QPointF(x, y)
    QApplication.sendEvent(v, QMouseEvent(kind, pos, v.mapToGlobal(pos), Qt.LeftButton, buttons, Qt.NoModifier))


def test_smooth_scaling_is_the_default(view):
    assert view.smooth


def test_wheel_zooms_at_the_cursor_and_drag_pans(view):
    assert view.zoom is None and view.scale() == pytest.approx(1.0)  # 400 px wide picture in a 400 px view
    before = view.widget_to_image(100, 120)
    wheel(view, 100, 120, 2)
    assert view.scale() == pytest.approx(1.25 ** 2)
    assert view.widget_to_image(100, 120) == pytest.approx(before, abs=1e-6)  # the point under the cursor stays
    r0 = view.target_rect()
    mouse(view, QEvent.MouseButtonPress, 200, 150)
    mouse(view, QEvent.MouseMove, 230, 140)
    mouse(view, QEvent.MouseButtonRelease, 230, 140, Qt.NoButton)
    r1 = view.target_rect()
    assert (r1.x() - r0.x(), r1.y() - r0.y()) == pytest.approx((30, -10), abs=1e-6)
    view.actual_size()
    assert view.scale() == 1.0 and view.zoom == 1.0
    view.fit()
    assert view.zoom is None


def test_a_smaller_frame_of_the_same_picture_keeps_the_view(view):
    wheel(view, 300, 100, 3)
    r = view.target_rect()
    small = np.zeros((100, 200, 3), np.uint8)
    view.set_image(small, full_size=(400, 200))  # a drag preview at half resolution
    assert view.target_rect() == r
    view.set_image(np.zeros((300, 300, 3), np.uint8))  # another picture shape: back to fit
    assert view.zoom is None


def test_before_is_shown_at_the_same_zoom(view):
    wheel(view, 100, 150, 4)  # zoom into the left (red) half
    before = np.zeros((200, 400, 3), np.uint8)
    before[..., 1] = 255  # green
    view.set_before(before)
    r = view.target_rect()
    view.show_before(True)
    img = view.grab().toImage()
    c = img.pixelColor(100, 150)
    assert (c.red(), c.green(), c.blue()) == (0, 255, 0)
    assert view.target_rect() == r
    view.show_before(False)
    c = view.grab().toImage().pixelColor(100, 150)
    assert (c.red(), c.green(), c.blue()) == (255, 0, 0)
    view.set_before(None)
    view.show_before(True)
    assert not view.showing_before  # nothing to compare with: the frame stays


def test_a_big_picture_shrunk_to_fit_is_area_averaged_not_aliased(qtbot, view):
    """Fine detail (1 px stripes) of a 2000 px picture fitted into 400 px: smooth scaling shows its average grey,
    as a shrink should; a bilinear draw alone picks stripes and shows a coarse false pattern (moiré)."""
    img = np.zeros((1000, 2000, 3), np.uint8)
    img[:, ::2] = 255  # 1 px black / white columns: 50 % grey when shrunk
    img[::3] = 0  # with a rhythm across the rows too
    view.set_image(img)
    shot = view.grab().toImage().convertToFormat(view.grab().toImage().Format.Format_RGB888)
    a = np.frombuffer(shot.constBits(), np.uint8).reshape(shot.height(), shot.bytesPerLine())[:, :3 * shot.width()]
    a = a.reshape(shot.height(), shot.width(), 3)[..., 0].astype(float)
    r = view.target_rect()
    inner = a[int(r.y()) + 4:int(r.y() + r.height()) - 4, 4:-4]
    assert abs(inner.mean() - 255 * 2 / 6) < 12  # the average: half the columns of two rows in three
    # near that grey (halved twice by area, then drawn bilinear: std ~11); a bilinear draw alone: ~120
    assert inner.std() < 40, inner.std()
