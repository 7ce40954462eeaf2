"""The face being edited as a mesh file (File → Export mesh…, ``discoface edit … --mesh head.glb``).

Photo mode: the fitted full head (face, neck, back of the head, eyes, mouth) with the snapshot's identity, expression
and pose baked into the positions, textured with the photo itself — each vertex's UV is where the fit saw it in the
photo (``PhotoRenderer.src.src_xy``: visible vertices project into the photo, hidden ones take the position filled in
from their visible neighbours, as the photo renderer's warp does). Otherwise: the face model's mesh with its albedo as
vertex colours. Positions in metres (model space: x the subject's left, y up, z toward the camera).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.io.mesh import Mesh, mesh_suffix, write_mesh
from engine.render import rotation_matrix

CM_TO_M = 0.01


def snapshot_mesh(session, snap=None) -> Mesh:
    """The mesh of ``snap`` (default: the session's current face)."""
    snap = snap if snap is not None else session.state
    c = snap.coeffs[0:1]
    with torch.no_grad():
        if snap.photo is not None:
            pr = session.frames.photo_renderer(snap.photo)
            verts = pr.proj.posed(pr.head.vertices(c)[0], c.pose[0])
            img = snap.photo.fit.image
            h, w = img.shape[:2]
            xy = pr.src.src_xy.numpy().astype(np.float64)
            uv = np.stack([xy[:, 0] / w, 1.0 - xy[:, 1] / h], 1).clip(0.0, 1.0)
            return Mesh(verts.numpy() * CM_TO_M, pr.head.triangles.numpy(), uv=uv, texture=img)
        model = session.model
        verts = model.vertices(c) @ rotation_matrix(c.pose).transpose(1, 2)
        cols = (model.albedo(c)[0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
        return Mesh(verts[0].numpy() * CM_TO_M, model.triangles.numpy(), colors=cols)


def export_mesh(session, path, snap=None) -> list[Path]:
    """Write the face as a mesh file (format by suffix: .glb .gltf .obj .ply); returns the files written."""
    mesh_suffix(path)  # a wrong suffix fails before any work
    return write_mesh(path, snapshot_mesh(session, snap))
