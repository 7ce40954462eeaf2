"""Linear robust solves for fixed geometry: photo colours at the projected vertices, SH light + RGB gain, albedo
coefficients (per channel, iteratively reweighted so hair, glasses and shadows the model cannot explain count less).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.face.model import DEFAULT_AMBIENT, Coefficients, FaceModel
from engine.fit.common import resize_crops
from engine.render import rotation_matrix
from engine.render.shading import full_light, sh_basis

__all__ = ["NARROW_FACE_VERTICES", "LIGHT_SHARE", "sample_vertex_colors", "split_light_gain", "solve_light",
           "solve_albedo"]

NARROW_FACE_VERTICES = 6706  # the kit's "narrow face area" is the vertex prefix 0..6705 (no ears, neck, scalp)


@torch.no_grad()
def sample_vertex_colors(crops: torch.Tensor, coeffs: Coefficients, model: FaceModel, renderer, size: int = 128,
                         min_facing: float = 0.25):
    """Photo colours at the projected vertices of the fitted faces.

    Returns ``colors`` (B, V, 3) sampled bilinearly from the crops, ``valid`` (B, V) bool (visible by a z-buffer
    test, facing the camera with n·view > ``min_facing``, inside the crop) and ``normals`` (B, V, 3) in camera
    orientation (for SH shading).
    """
    b = crops.shape[0]
    r = renderer(coeffs, size)
    screen, cam = r.screen, r.cam_vertices
    verts = model.vertices(coeffs)
    normals = model.vertex_normals(verts) @ rotation_matrix(coeffs.pose).transpose(1, 2)
    # z-buffer test at the vertex's pixel
    ix = screen[..., 0].floor().long().clamp(0, size - 1)
    iy = screen[..., 1].floor().long().clamp(0, size - 1)
    depth = r.depth[:, 0]
    zb = depth[torch.arange(b)[:, None], iy, ix]
    inside = (screen[..., 0] > 1) & (screen[..., 0] < size - 1) & (screen[..., 1] > 1) & (screen[..., 1] < size - 1)
    view = -torch.nn.functional.normalize(cam - torch.tensor([0.0, 0.0, 0.0]), dim=-1)  # toward the camera
    # camera space has z = distance in front, so the view direction toward the camera is (-x, -y, -z)/|.|
    # while normals are in model-rotated axes (+z toward the viewer): flip z of the camera vector
    view = torch.stack([view[..., 0], view[..., 1], -view[..., 2]], -1)
    facing = (normals * view).sum(-1)
    valid = inside & (zb > 0) & ((cam[..., 2] - zb).abs() < 0.6) & (facing > min_facing)
    grid = screen / size * 2 - 1  # align_corners=False convention: pixel centres at i + 0.5
    img = resize_crops(crops.float(), size)
    colors = F.grid_sample(img, grid.unsqueeze(1), mode="bilinear", align_corners=False)[:, :, 0].permute(0, 2, 1)
    return colors, valid, normals


LIGHT_SHARE = 0.3  # fraction (in log) of the overall brightness attributed to the light; the rest to the albedo


def split_light_gain(p: torch.Tensor, share: float = LIGHT_SHARE):
    """Per-channel SH light ``p`` (3, 9) (colour and brightness included) → (grey light offsets (27,), gain (3,)).

    Brightness and light intensity are ambiguous in a photo; ``share`` of it (in log) goes to the ambient light,
    the rest (and all colour) to the RGB gain, so dark skin stays dark albedo rather than dim light.
    """
    p0 = p[:, 0].clamp_min(1e-3)
    s = p0.mean() / DEFAULT_AMBIENT
    l0 = DEFAULT_AMBIENT * s ** share
    g = p0 / l0
    lk = (p / g[:, None]).mean(0)
    full = lk.expand(3, 9).clone()
    full[:, 0] -= DEFAULT_AMBIENT
    return full.reshape(27), g


@torch.no_grad()
def solve_light(crops: torch.Tensor, coeffs: Coefficients, model: FaceModel, renderer, size: int = 128,
                iters: int = 4, vertices: int = NARROW_FACE_VERTICES):
    """Linear least-squares SH light (grey) and per-image RGB gain for fixed geometry.

    colour_c(v) = albedo_c(v) · gain_c · Σ_k Y_k(n_v) L_k, solved per channel on the visible, camera-facing
    vertices of the narrow face region, iteratively reweighted (Cauchy) so hair, glasses and shadows that the
    model cannot explain are down-weighted. Returns (light offsets (B, 27), gain (B, 3), residual (B,) mean
    colour distance of the inliers).
    """
    colors, valid, normals = sample_vertex_colors(crops, coeffs, model, renderer, size)
    colors, valid, normals = colors[:, :vertices], valid[:, :vertices], normals[:, :vertices]
    alb = model.albedo(coeffs)[:, :vertices]
    y = sh_basis(normals)  # (B, V, 9)
    b = colors.shape[0]
    light = torch.zeros(b, 27)
    gain = torch.ones(b, 3)
    resid = torch.full((b,), float("nan"))
    eye = torch.eye(9)
    prior = torch.zeros(9)
    prior[0] = DEFAULT_AMBIENT
    for i in range(b):
        m = valid[i]
        if m.sum() < 50:
            continue
        yi, ci, ai = y[i][m], colors[i][m], alb[i][m].clamp_min(1e-3)
        w = torch.ones(len(yi))
        for _ in range(iters):
            p = []
            for c in range(3):
                a = yi * ai[:, c:c + 1]  # (n, 9)
                aw = a * w[:, None]
                lam = 1e-2 * w.sum()
                sol = torch.linalg.solve(a.T @ aw + lam * eye, aw.T @ ci[:, c] + lam * prior)
                p.append(sol)
            p = torch.stack(p)  # (3, 9): per-channel light incl. colour
            pred = torch.einsum("nk,ck->nc", yi, p) * ai
            r = (pred - ci).norm(dim=-1)
            s = r.median().clamp_min(1e-3) * 1.5
            w = 1.0 / (1.0 + (r / s) ** 2)
        light[i], gain[i] = split_light_gain(p)
        resid[i] = (r * w).sum() / w.sum()
    return light, gain, resid


@torch.no_grad()
def solve_albedo(crops: torch.Tensor, coeffs: Coefficients, model: FaceModel, renderer, size: int = 128,
                 iters: int = 3, ridge: float = 1.0, vertices: int = NARROW_FACE_VERTICES):
    """Linear robust albedo coefficients for fixed geometry and light (needs a learned albedo basis), then the
    light and gain once more with that albedo. Returns (albedo (B, K), gain (B, 3), residual (B,)); the light is
    written into ``coeffs.light``."""
    k = model.albedo_dim
    b = crops.shape[0]
    if k == 0:
        return coeffs.albedo.clone(), torch.ones(b, 3), torch.full((b,), float("nan"))
    colors, valid, normals = sample_vertex_colors(crops, coeffs, model, renderer, size)
    colors, valid, normals = colors[:, :vertices], valid[:, :vertices], normals[:, :vertices]
    irr = torch.einsum("bvk,bck->bvc", sh_basis(normals), full_light(coeffs.light))  # (B, V, 3)
    mean = model.albedo_mean[:vertices]
    basis = model.albedo_basis[:, :vertices]  # (K, V, 3)
    out = torch.zeros(b, k)
    for i in range(b):
        m = valid[i]
        if m.sum() < 50:
            continue
        a = (basis[:, m] * irr[i][m]).permute(1, 2, 0).reshape(-1, k)  # (n*3, K)
        rhs = (colors[i][m] - mean[m] * irr[i][m]).reshape(-1)
        w = torch.ones(int(m.sum()))
        for _ in range(iters):
            w3 = w.repeat_interleave(3)
            aw = a * w3[:, None]
            sol = torch.linalg.solve(a.T @ aw + ridge * torch.eye(k), aw.T @ rhs)
            r = (a @ sol - rhs).view(-1, 3).norm(dim=-1)
            s = r.median().clamp_min(1e-3) * 1.5
            w = 1.0 / (1.0 + (r / s) ** 2)
        out[i] = sol
    c2 = coeffs.clone()
    c2.albedo = out
    light, gain, resid = solve_light(crops, c2, model, renderer, size)
    coeffs.light = light
    return out, gain, resid
