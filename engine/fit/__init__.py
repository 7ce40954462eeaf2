"""Fitting the face model to pixels and landmarks: the one home of every solver, between ``render`` /
``perception`` (below) and ``photo`` / ``drive`` / ``editing`` / ``generator`` (above). This file only re-exports.

- :mod:`engine.fit.common` — :class:`FitCancelled`, the one renderer cache (:func:`renderer_for`), crops as tensors;
- :mod:`engine.fit.landmarks` — the 68 landmark vertices (:class:`LandmarkGeometry`, sliding jaw contour), their
  weights, NME, and the expression priors every landmark solve shares;
- :mod:`engine.fit.synthesis` — the batched analysis-by-synthesis fit (Adam: landmarks, then photometric):
  :func:`fit_coefficients`, :func:`fit_photo_crop`;
- :mod:`engine.fit.linear` — linear robust light / gain / albedo for fixed geometry;
- :mod:`engine.fit.gauss_newton` — the damped Gauss–Newton landmark solve (:func:`solve_landmarks`);
- :mod:`engine.fit.expression` — the per-frame expression + pose solver and the per-video identity estimate.
"""
from __future__ import annotations

from engine.fit.common import FitCancelled, crops_to_tensor, renderer_for, resize_crops
from engine.fit.expression import (ExpressionPoseSolver, LandmarkReading, estimate_identity, pose_from_rotation,
                                   rotation_np)
from engine.fit.gauss_newton import LandmarkSolve, solve_landmarks
from engine.fit.landmarks import (KEY_EXPRESSIONS, LANDMARK_WEIGHTS, PREFERRED_EXPRESSIONS, UNOBSERVED_EXPRESSIONS,
                                  UNSEEN_EXPRESSIONS, LandmarkGeometry, expression_prior_weights, landmark_nme,
                                  lr_pairs)
from engine.fit.linear import (LIGHT_SHARE, NARROW_FACE_VERTICES, sample_vertex_colors, solve_albedo, solve_light,
                               split_light_gain)
from engine.fit.synthesis import FitResult, fit_coefficients, fit_photo_crop, overlay_image, skin_weights

__all__ = ["FitCancelled", "crops_to_tensor", "renderer_for", "resize_crops", "ExpressionPoseSolver",
           "LandmarkReading", "estimate_identity", "pose_from_rotation", "rotation_np", "LandmarkSolve",
           "solve_landmarks", "KEY_EXPRESSIONS", "LANDMARK_WEIGHTS", "PREFERRED_EXPRESSIONS", "UNOBSERVED_EXPRESSIONS",
           "UNSEEN_EXPRESSIONS", "LandmarkGeometry", "expression_prior_weights", "landmark_nme", "lr_pairs",
           "LIGHT_SHARE", "NARROW_FACE_VERTICES", "sample_vertex_colors", "solve_albedo", "solve_light",
           "split_light_gain", "FitResult", "fit_coefficients", "fit_photo_crop", "overlay_image", "skin_weights"]
