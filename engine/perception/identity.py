"""Differentiable PyTorch port of dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``).

The network is read straight from dlib's own serialized model file (CC0, shipped in the registry package
``face_recognition_models``); nothing is converted or committed.

dlib's definition (``dnn_face_recognition_ex.cpp``) is

    loss_metric<fc_no_bias<128, avg_pool_everything<
        alevel0<alevel1<alevel2<alevel3<alevel4<
        max_pool<3,3,2,2, relu<affine<con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>>>>>>>

with ``block = affine<con<N,3,3,1,1, relu<affine<con<N,3,3,s,s, x>>>>>``,
``ares = relu<add_prev1<block<N,1, tag1<x>>>>`` and
``ares_down = relu<add_prev2<avg_pool<2,2,2,2, skip1<tag2<block<N,2, tag1<x>>>>>>>`` (the skip path is the block's
input, 2x2/2 average pooled). dlib's ``add_prev`` adds tensors of different shapes by zero-extending the smaller one
(channels 32 -> 64 etc., and the 3x3 vs 4x4 mismatch at 8 px input: the block output lands in the top-left corner).

Serialization (dlib/serialize.h, dlib/dnn/core.h, layers.h, input.h, loss.h, tensor.h), as found in the file:
- integers: one header byte (low nibble: byte count, bit 7: negative) followed by that many little-endian bytes;
- floats/doubles: two integers, mantissa and exponent (value = mantissa * 2**exponent);
- strings: an integer length then the bytes; bools: one ASCII byte '0' / '1';
- tensors: version 2, num_samples, k, nr, nc, then raw little-endian float32 data;
- alias_tensors: version 1, num_samples, k, nr, nc;
- ``add_loss_layer``: version, loss details, subnet; ``add_layer``: version, subnet, details, 3 bools, 3 (empty)
  tensors (plus the sample expansion factor for the one over the input layer, version 3);
  ``add_tag_layer`` / ``add_skip_layer``: version, subnet. So the file holds the loss record, then one version integer
  per wrapper (outermost first), then the input layer, then the layers' details innermost first.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MODEL_NAME = "dlib_face_recognition_resnet_model_v1.dat"
CHIP_SIZE = 150
CHIP_PADDING = 0.25
SAME_PERSON_THRESHOLD = 0.6  # dlib's documented decision threshold on the Euclidean distance


class IdentityModelError(RuntimeError):
    """The dlib face-recognition model file is missing, truncated or not the expected network."""


# --------------------------------------------------------------------------------------------------------------------
# dlib's binary serialization


class _Reader:
    def __init__(self, data: bytes, name: str):
        self.data = data
        self.pos = 0
        self.name = name

    def fail(self, what: str):
        raise IdentityModelError(f"{self.name}: not a valid dlib face-recognition model ({what} at byte {self.pos})")

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise IdentityModelError(
                f"{self.name}: the file is truncated ({len(self.data)} bytes, needed {self.pos + n}); "
                "reinstall the 'face_recognition_models' package")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def int(self) -> int:
        head = self.take(1)[0]
        n = head & 0x0F
        if n > 8 or head & 0x70:
            self.fail(f"bad integer header 0x{head:02x}")
        v = int.from_bytes(self.take(n), "little") if n else 0
        return -v if head & 0x80 else v

    def float(self) -> float:
        mantissa = self.int()
        exponent = self.int()
        if abs(exponent) >= 32000:  # dlib's codes for inf / nan
            self.fail("non-finite value")
        return float(mantissa) * 2.0 ** exponent

    def bool(self) -> bool:
        c = self.take(1)
        if c not in (b"0", b"1"):
            self.fail(f"bad bool {c!r}")
        return c == b"1"

    def string(self) -> str:
        n = self.int()
        if not 0 <= n <= 256:
            self.fail(f"bad string length {n}")
        try:
            return self.take(n).decode("ascii")
        except UnicodeDecodeError:
            self.fail("bad string")

    def expect(self, name: str):
        s = self.string()
        if s != name:
            self.fail(f"expected layer record '{name}', found '{s}'")

    def tensor(self) -> np.ndarray:
        if self.int() != 2:
            self.fail("unknown tensor version")
        shape = tuple(self.int() for _ in range(4))
        if any(s < 0 for s in shape):
            self.fail("negative tensor size")
        count = int(np.prod(shape))
        return np.frombuffer(self.take(4 * count), dtype="<f4").reshape(shape).astype(np.float32)

    def alias(self) -> tuple[int, int, int, int]:
        if self.int() != 1:
            self.fail("unknown alias_tensor version")
        return tuple(self.int() for _ in range(4))


def _layer_tail(r: _Reader, version: int):
    """What ``add_layer`` writes after its layer's details (state flags and gradient buffers, empty in a saved net)."""
    if version not in (2, 3):
        r.fail(f"unsupported add_layer version {version}")
    for _ in range(3):
        r.bool()
    for _ in range(3):
        r.tensor()
    if version == 3:  # the add_layer directly over the input layer also stores its sample expansion factor
        if r.int() != 1:
            r.fail("unexpected sample expansion factor")


def _read_con(r: _Reader) -> dict:
    version = r.string()
    if version not in ("con_4", "con_5"):
        r.fail(f"expected a con_ layer, found '{version}'")
    params = r.tensor().reshape(-1)
    nf, nr, nc, sy, sx, py, px = (r.int() for _ in range(7))
    filt = r.alias()
    bias = r.alias()
    for _ in range(4):
        r.float()  # learning-rate / weight-decay multipliers
    use_bias = r.bool() if version == "con_5" else True
    n_w = int(np.prod(filt))
    if filt[0] != nf or filt[2:] != (nr, nc) or params.size != n_w + (nf if use_bias else 0):
        r.fail("inconsistent con_ shapes")
    w = params[:n_w].reshape(filt)
    b = params[n_w:] if use_bias else np.zeros(nf, np.float32)
    return dict(kind="con", weight=w, bias=b, stride=(sy, sx), padding=(py, px))


def _read_affine(r: _Reader) -> dict:
    r.expect("affine_")
    params = r.tensor().reshape(-1)
    g = r.alias()
    b = r.alias()
    mode = r.int()
    k = int(np.prod(g))
    if mode != 0 or int(np.prod(b)) != k or params.size != 2 * k:
        r.fail("unexpected affine_ layer (only the per-channel CONV_MODE affine is supported)")
    return dict(kind="affine", gamma=params[:k].copy(), beta=params[k:].copy())


def _read_pool(r: _Reader, name: str) -> dict:
    r.expect(name)
    nr, nc, sy, sx, py, px = (r.int() for _ in range(6))
    return dict(kind=name[:-2], window=(nr, nc), stride=(sy, sx), padding=(py, px))


def _parse(data: bytes, name: str) -> dict:
    r = _Reader(data, name)
    if r.int() != 1:
        r.fail("unknown loss-layer version")
    r.expect("loss_metric_2")
    margin, dist_thresh = r.float(), r.float()
    # one version integer per wrapper layer, outermost first, until the innermost add_layer (version 3: its subnet is
    # the input layer itself)
    versions = []
    while True:
        v = r.int()
        versions.append(v)
        if v == 3 or len(versions) > 1000:
            break
    r.expect("input_rgb_image_sized")
    mean = [r.float() for _ in range(3)]
    nr, nc = r.int(), r.int()
    if (nr, nc) != (CHIP_SIZE, CHIP_SIZE):
        r.fail(f"unexpected input size {nr}x{nc}")

    def layer(read, *args):
        rec = read(r, *args)
        _layer_tail(r, add_versions.pop())
        return rec

    add_versions = [v for v in versions if v in (2, 3)]  # add_layer records, innermost last in this list
    n_add = len(add_versions)

    stem = [layer(_read_con), layer(_read_affine)]
    layer(lambda rr: rr.expect("relu_"))
    pool = layer(_read_pool, "max_pool_2")
    blocks = []
    # alevel4 .. alevel0, innermost first: (channels, downsample) per residual block
    plan = [(32, False)] * 3 + [(64, True)] + [(64, False)] * 3 + [(128, True)] + [(128, False)] * 2 \
        + [(256, True)] + [(256, False)] * 2 + [(256, True)]
    for ch, down in plan:
        c1, a1 = layer(_read_con), layer(_read_affine)
        layer(lambda rr: rr.expect("relu_"))
        c2, a2 = layer(_read_con), layer(_read_affine)
        skip_pool = layer(_read_pool, "avg_pool_2") if down else None
        layer(lambda rr: rr.expect("add_prev_"))
        layer(lambda rr: rr.expect("relu_"))
        if c1["weight"].shape[0] != ch or c2["weight"].shape[0] != ch or c1["stride"] != ((2, 2) if down else (1, 1)):
            r.fail("unexpected residual block layout")
        if down and (skip_pool["window"], skip_pool["stride"], skip_pool["padding"]) != ((2, 2), (2, 2), (0, 0)):
            r.fail("unexpected down-sampling pool")
        blocks.append(dict(c1=c1, a1=a1, c2=c2, a2=a2, down=down))
    gpool = layer(_read_pool, "avg_pool_2")
    if gpool["window"] != (0, 0):
        r.fail("expected avg_pool_everything")
    r.expect("fc_2")
    n_out, n_in = r.int(), r.int()
    params = r.tensor().reshape(-1)
    w_alias = r.alias()
    b_alias = r.alias()
    bias_mode = r.int()
    for _ in range(4):
        r.float()
    _layer_tail(r, add_versions.pop())
    if add_versions:
        r.fail("layer count does not match the expected network")
    if bias_mode != 1 or w_alias[:2] != (n_in, n_out) or params.size != n_in * n_out or (n_in, n_out) != (256, 128):
        r.fail("unexpected fc_no_bias layer")
    if r.pos != len(data):
        r.fail(f"{len(data) - r.pos} unexpected trailing bytes")
    # tag/skip wrappers (version 1 records): tag1 per residual block, plus tag2 and skip1 per down-sampling block
    n_tags = sum(1 for v in versions if v == 1)
    if n_tags != len(plan) + 2 * sum(d for _, d in plan) or len(versions) != n_tags + n_add:
        r.fail("tag/skip layout does not match the expected network")
    fc = params.reshape(n_in, n_out).T.copy()  # dlib computes x @ W with W (num_inputs, num_outputs)
    return dict(mean=mean, stem=stem, pool=pool, blocks=blocks, fc=fc, margin=margin, threshold=dist_thresh)


# --------------------------------------------------------------------------------------------------------------------
# the network


class _Affine(nn.Module):
    def __init__(self, k: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(k))
        self.bias = nn.Parameter(torch.zeros(k))

    def forward(self, x):
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def _conv(cin, cout, k, s, p):
    return nn.Conv2d(cin, cout, k, stride=s, padding=p, bias=True)


def _add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``tt::add`` for differently sized tensors: zero-extend both to the larger size, then add."""
    if a.shape == b.shape:
        return a + b
    shape = [max(x, y) for x, y in zip(a.shape, b.shape)]

    def ext(t):
        pad = []
        for dim in (3, 2, 1):
            pad += [0, shape[dim] - t.shape[dim]]
        return F.pad(t, pad)

    return ext(a) + ext(b)


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        s = 2 if down else 1
        self.down = down
        self.conv1 = _conv(cin, cout, 3, s, 0 if down else 1)
        self.aff1 = _Affine(cout)
        self.conv2 = _conv(cout, cout, 3, 1, 1)
        self.aff2 = _Affine(cout)

    def forward(self, x):
        y = self.aff2(self.conv2(F.relu(self.aff1(self.conv1(x)))))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_add_prev(y, skip))


class IdentityNet(nn.Module):
    """dlib's 29-layer face-recognition ResNet: (B,3,150,150) RGB chips in [0,1] -> (B,128) descriptors."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([122.782, 117.001, 104.298]).view(1, 3, 1, 1))
        self.conv0 = _conv(3, 32, 7, 2, 0)
        self.aff0 = _Affine(32)
        chans = [(32, 32, False)] * 3 + [(32, 64, True)] + [(64, 64, False)] * 3 + [(64, 128, True)] \
            + [(128, 128, False)] * 2 + [(128, 256, True)] + [(256, 256, False)] * 2 + [(256, 256, True)]
        self.blocks = nn.ModuleList(_Block(a, b, d) for a, b, d in chans)
        self.fc = nn.Linear(256, 128, bias=False)
        self._chip_cache: dict = {}

    # ---- loading
    @classmethod
    def load(cls, path=None) -> "IdentityNet":
        if path is None:
            from engine.perception.dlib_files import ModelFileError, model_file

            try:
                path = model_file(MODEL_NAME)
            except ModelFileError as e:
                raise IdentityModelError(str(e)) from None
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise IdentityModelError(f"cannot read the dlib face-recognition model {path}: {e.strerror or e}") from None
        spec = _parse(data, str(path))
        net = cls()
        net.mean.copy_(torch.tensor(spec["mean"]).view(1, 3, 1, 1))
        sd = {}

        def put_con(prefix, rec):
            sd[prefix + ".weight"] = torch.from_numpy(rec["weight"])
            sd[prefix + ".bias"] = torch.from_numpy(np.ascontiguousarray(rec["bias"]))

        def put_aff(prefix, rec):
            sd[prefix + ".weight"] = torch.from_numpy(rec["gamma"])
            sd[prefix + ".bias"] = torch.from_numpy(rec["beta"])

        put_con("conv0", spec["stem"][0])
        put_aff("aff0", spec["stem"][1])
        if spec["pool"]["window"] != (3, 3) or spec["pool"]["stride"] != (2, 2) or spec["pool"]["padding"] != (0, 0):
            raise IdentityModelError(f"{path}: unexpected max-pool layer")
        if spec["stem"][0]["stride"] != (2, 2) or spec["stem"][0]["padding"] != (0, 0):
            raise IdentityModelError(f"{path}: unexpected first convolution")
        for i, (blk, rec) in enumerate(zip(net.blocks, spec["blocks"])):
            for name, mod in (("c1", blk.conv1), ("c2", blk.conv2)):
                if rec[name]["padding"] != tuple(mod.padding) or rec[name]["stride"] != tuple(mod.stride):
                    raise IdentityModelError(f"{path}: unexpected convolution geometry in block {i}")
            put_con(f"blocks.{i}.conv1", rec["c1"])
            put_aff(f"blocks.{i}.aff1", rec["a1"])
            put_con(f"blocks.{i}.conv2", rec["c2"])
            put_aff(f"blocks.{i}.aff2", rec["a2"])
        sd["fc.weight"] = torch.from_numpy(spec["fc"])
        sd["mean"] = net.mean.clone()
        own = net.state_dict()
        for k, v in sd.items():
            if own[k].shape != v.shape:
                raise IdentityModelError(
                    f"{path}: tensor {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
        missing = set(own) - set(sd)
        if missing:
            raise IdentityModelError(f"{path}: missing tensors {sorted(missing)}")
        net.load_state_dict(sd)
        return net.eval()

    # ---- inference
    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        """(B,3,150,150) RGB in [0,1] framed as ``dlib.get_face_chip(img, shape, 150, 0.25)`` -> (B,128)."""
        if chips.dim() != 4 or chips.shape[1] != 3:
            raise ValueError(f"chips must be (B,3,150,150), got {tuple(chips.shape)}")
        # dlib: (pixel_uint8 - mean) / 256
        x = (chips.to(self.mean.dtype) * 255.0 - self.mean) / 256.0
        x = F.relu(self.aff0(self.conv0(x)))
        x = F.max_pool2d(x, 3, 2)
        for blk in self.blocks:
            x = blk(x)
        x = x.mean(dim=(2, 3))
        return self.fc(x)

    def chip_grid(self, size: int | tuple[int, int], device=None, dtype=torch.float32) -> torch.Tensor:
        """(1,150,150,2) grid_sample coordinates (align_corners=False) of dlib's chip inside our canonical crop."""
        h, w = (size, size) if isinstance(size, int) else size
        key = (h, w)
        if key not in self._chip_cache:
            self._chip_cache[key] = torch.from_numpy(crop_to_chip_map(h, w)).float()
        m = self._chip_cache[key].to(device=device, dtype=dtype)  # chip continuous coords -> crop continuous coords
        c = torch.arange(CHIP_SIZE, device=device, dtype=dtype) + 0.5
        yy, xx = torch.meshgrid(c, c, indexing="ij")
        pts = torch.stack([xx, yy, torch.ones_like(xx)], -1) @ m.T  # (150,150,2) crop coords
        norm = torch.stack([pts[..., 0] / w * 2 - 1, pts[..., 1] / h * 2 - 1], -1)
        return norm.unsqueeze(0)

    def crops_to_chips(self, crops: torch.Tensor, mask: torch.Tensor | None = None,
                       padding_mode: str = "border") -> torch.Tensor:
        """Resample canonical crops (B,3,H,W) to dlib's 150 px chip framing, differentiably."""
        if crops.dim() != 4 or crops.shape[1] != 3:
            raise ValueError(f"crops must be (B,3,H,W), got {tuple(crops.shape)}")
        if mask is not None:
            crops = crops * mask
        h, w = crops.shape[-2:]
        # chip pixels per crop pixel; anti-alias first when the chip is much smaller than the crop
        m = crop_to_chip_map(h, w)
        scale = 1.0 / float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
        if scale < 0.8:
            nh, nw = max(8, round(h * scale)), max(8, round(w * scale))
            crops = F.interpolate(crops, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        grid = self.chip_grid((h, w), crops.device, crops.dtype).expand(crops.shape[0], -1, -1, -1)
        # normalised coordinates do not change with the anti-alias resize (align_corners=False)
        return F.grid_sample(crops, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)

    def embed_crops(self, crops: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B,3,H,W) in [0,1], our canonical crop framing -> (B,128) descriptors (differentiable)."""
        return self.forward(self.crops_to_chips(crops, mask))


def identity_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance between descriptors (dlib: same person when < 0.6)."""
    return torch.linalg.vector_norm(a - b, dim=-1)


# --------------------------------------------------------------------------------------------------------------------
# framing: our canonical crop -> dlib's face chip


def _template_landmarks(h: int, w: int) -> np.ndarray:
    from engine.face.model import default_model
    from engine.render import canonical_landmarks

    # canonical_landmarks is defined for square crops; scale x/y separately for non-square ones
    lm = canonical_landmarks(default_model(), h).detach().cpu().numpy().astype(np.float64)
    lm[:, 0] *= w / h
    return lm


def crop_to_chip_map(h: int, w: int) -> np.ndarray:
    """(2,3) affine map from chip continuous coords (pixel i covers [i, i+1)) to canonical-crop continuous coords.

    Obtained once per crop size by asking dlib for the chip of the template landmarks (dlib's mean-face alignment on
    points 17-67, 25 % padding). dlib's chip pixel (0,0), (cols-1,0), (cols-1,rows-1) sit on the chip rectangle's
    corners rotated about its centre by ``angle``.
    """
    key = (h, w)
    with _lock:
        if key in _MAP_CACHE:
            return _MAP_CACHE[key]
    import dlib

    lm = _template_landmarks(h, w) - 0.5  # continuous -> dlib pixel-index coordinates
    # dlib points are integer; use a large virtual crop so rounding does not matter, then scale back
    big = 64.0
    parts = [dlib.point(int(round(x * big)), int(round(y * big))) for x, y in lm]
    rect = dlib.rectangle(0, 0, int(w * big), int(h * big))
    det = dlib.full_object_detection(rect, parts)
    cd = dlib.get_face_chip_details(det, CHIP_SIZE, CHIP_PADDING)
    r = cd.rect
    cx, cy = (r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2
    ca, sa = np.cos(cd.angle), np.sin(cd.angle)

    def rot(x, y):
        dx, dy = x - cx, y - cy
        return np.array([cx + ca * dx - sa * dy, cy + sa * dx + ca * dy]) / big

    src = np.stack([rot(r.left(), r.top()), rot(r.right(), r.top()), rot(r.right(), r.bottom())])
    n = CHIP_SIZE - 1
    dst = np.array([[0, 0], [n, 0], [n, n]], np.float64)
    # solve chip index -> crop index affine from the 3 correspondences
    a = np.hstack([dst, np.ones((3, 1))])
    m_idx = np.linalg.solve(a, src).T  # (2,3): crop_idx = M @ [chip_idx, 1]
    # continuous coordinates: crop_c = M @ (chip_c - 0.5) + 0.5
    m = m_idx.copy()
    m[:, 2] = m_idx[:, 2] - 0.5 * m_idx[:, :2].sum(1) + 0.5
    with _lock:
        _MAP_CACHE[key] = m
    return m


_MAP_CACHE: dict = {}
_lock = threading.Lock()
_default: IdentityNet | None = None


def default_identity_net() -> IdentityNet:
    """The dlib network from ``face_recognition_models``, loaded once per process (eval, no parameter grads)."""
    global _default
    with _lock:
        if _default is None:
            net = IdentityNet.load()
            for p in net.parameters():
                p.requires_grad_(False)
            _default = net.eval()
        return _default


__all__ = ["IdentityNet", "IdentityModelError", "identity_distance", "default_identity_net", "crop_to_chip_map",
           "SAME_PERSON_THRESHOLD", "CHIP_SIZE", "CHIP_PADDING"]
