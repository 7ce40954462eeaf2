"""Losses of the imitative-contrastive generator (DiscoFaceGAN, DESIGN §1).

* adversarial: non-saturating logistic for G, logistic + lazy R1 (γ = 10) for D;
* stage 1, imitative (G(λ) should look like the render R(λ) where the 3DMM says something):
  - ``20 × L1``: per-pixel colour distance (sqrt of summed squared RGB difference, averaged over render-mask pixels)
    on an ``l1_res`` (32 px) downsample. Our G has a fixed resolution (no progressive growing), so the original's
    "while the resolution is ≤ 32 px" becomes "for the first ``l1_kimg`` images, at 32 px";
  - afterwards ``500 × landmark + 10 × light + 3 × identity + 20 × skin`` through the R-Net and the identity net;
* stage 2, contrastive pairs that differ in one factor: expression pairs (3D-flow warp consistency, weight 10) and
  lighting pairs (outside-face consistency + 2(1−cos) identity + 1000 × landmark, weight 10).

The R-Net (``engine.perception.rnet.RNet``) and identity net (``engine.perception.identity.IdentityNet``) are loaded
lazily. When either is unavailable, :class:`Perception` says so once and the terms that need it are skipped (and the
L1 imitation term stays on, so G stays tied to the coefficients); the loss dict reports which terms ran.
"""
from __future__ import annotations

import contextlib
import math
import sys

import torch
import torch.nn.functional as F

from engine.face.model import Coefficients
from engine.generator.networks import FactorDecoders, Generator, Latents, sample_latents
from engine.render import FaceRenderer, interpolate
from training.augment import diff_augment, parse_policy

# ----------------------------------------------------------------------------------------------- perception nets


class Perception:
    """Holds the (frozen) R-Net and identity net; loads them on first use, says once when one is missing."""

    def __init__(self, rnet=None, idnet=None, load: bool = True, log=None):
        self._rnet, self._idnet = rnet, idnet
        self._tried = {"rnet": rnet is not None or not load, "idnet": idnet is not None or not load}
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.warned: set[str] = set()
        for net in (rnet, idnet):
            if net is not None:
                net.requires_grad_(False)

    def _load(self, which: str):
        try:
            if which == "rnet":
                from engine.perception.rnet import RNet

                net = RNet.load()
            else:
                from engine.perception.identity import IdentityNet

                net = IdentityNet.load()
        except Exception as exc:  # missing module or weights: say so once, run without the term
            what = {"rnet": "R-Net (landmark/light terms)", "idnet": "identity net (identity terms)"}[which]
            self.say(which, f"note: {what} unavailable, training without those terms: {type(exc).__name__}: {exc}")
            return None
        net.eval().requires_grad_(False)
        return net

    def say(self, key: str, msg: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            self.log(msg)

    def to(self, device):
        for name in ("_rnet", "_idnet"):
            net = getattr(self, name)
            if net is not None:
                setattr(self, name, net.to(device))
        self._device = device
        return self

    @property
    def rnet(self):
        if not self._tried["rnet"]:
            self._tried["rnet"] = True
            self._rnet = self._load("rnet")
            if self._rnet is not None and hasattr(self, "_device"):
                self._rnet = self._rnet.to(self._device)
        return self._rnet

    @property
    def idnet(self):
        if not self._tried["idnet"]:
            self._tried["idnet"] = True
            self._idnet = self._load("idnet")
            if self._idnet is not None and hasattr(self, "_device"):
                self._idnet = self._idnet.to(self._device)
        return self._idnet

    def estimate(self, img01: torch.Tensor) -> Coefficients:
        net = self.rnet
        out = net(img01)
        return out

    def embed(self, img01: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        net = self.idnet
        x = img01 if mask is None else img01 * mask
        return net.embed_crops(x)


# ----------------------------------------------------------------------------------------------- small helpers


def to01(img: torch.Tensor) -> torch.Tensor:
    return img * 0.5 + 0.5


def colour_distance(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(B, 3, H, W) × 2 → (B, 1, H, W) Euclidean RGB distance (sqrt with a floor so the gradient stays finite)."""
    return ((a - b).pow(2).sum(1, keepdim=True) + eps).sqrt()


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image mean of x over mask pixels, then batch mean; images with an empty mask count 0."""
    num = (x * mask).flatten(1).sum(1)
    den = mask.flatten(1).sum(1)
    return (num / den.clamp_min(1.0)).mean()


def gaussian_blur(img: torch.Tensor, ksize: int = 5, sigma: float = 2.0) -> torch.Tensor:
    r = torch.arange(ksize, device=img.device, dtype=img.dtype) - (ksize - 1) / 2
    k1 = torch.exp(-r * r / (2 * sigma * sigma))
    k1 = k1 / k1.sum()
    c = img.shape[1]
    kx = k1.view(1, 1, 1, ksize).repeat(c, 1, 1, 1)
    ky = k1.view(1, 1, ksize, 1).repeat(c, 1, 1, 1)
    x = F.pad(img, (ksize // 2,) * 4, mode="replicate")
    return F.conv2d(F.conv2d(x, kx, groups=c), ky, groups=c)


def downsample(img: torch.Tensor, res: int) -> torch.Tensor:
    if img.shape[-1] == res:
        return img
    return F.adaptive_avg_pool2d(img, res)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a, b, dim=1, eps=1e-8)


def warp_by_flow(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``img`` at p + flow(p) (flow in pixels, (B, 2, H, W) x/y) with bilinear interpolation."""
    b, _, h, w = img.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=img.device, dtype=img.dtype) + 0.5,
                            torch.arange(w, device=img.device, dtype=img.dtype) + 0.5, indexing="ij")
    x = xs.unsqueeze(0) + flow[:, 0]
    y = ys.unsqueeze(0) + flow[:, 1]
    grid = torch.stack([x / w * 2 - 1, y / h * 2 - 1], -1)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)


# ----------------------------------------------------------------------------------------------- adversarial


def d_logistic(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(d_fake).mean() + F.softplus(-d_real).mean()


def g_nonsaturating(d_fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-d_fake).mean()


def r1_penalty(D, real: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """γ/2 · E‖∇_x D(x)‖² on real images; returns (penalty, D(real))."""
    real = real.detach().requires_grad_(True)
    logits = D(real)
    (grad,) = torch.autograd.grad(logits.float().sum(), real, create_graph=True)
    return grad.float().pow(2).sum((1, 2, 3)).mean() * (gamma / 2), logits


# ----------------------------------------------------------------------------------------------- imitative + contrastive


class DiscoLoss:
    """Generator-side imitative and contrastive losses; holds the renderer and perception nets."""

    WEIGHTS = {"l1": 20.0, "landmark": 500.0, "light": 10.0, "identity": 3.0, "skin": 20.0,
               "exp_pair": 10.0, "light_pair": 10.0, "id_diversity": 0.0, "id_keep": 0.0}
    ID_MARGIN = 0.75  # identity-net distance random identities should reach (UTKFace pairs: median ≈ 0.8)
    KEEP_MARGIN = 0.4  # ... and that an edit of pose / expression / light should stay under (same person < 0.6)

    def __init__(self, renderer: FaceRenderer, perception: Perception, resolution: int, l1_res: int = 32,
                 l1_kimg: float = 3000.0, stage2_kimg: float = 15000.0, lm_weight_stage2: float = 100.0,
                 lm_kimg: float | None = None, weights: dict | None = None, head=None):
        """``l1_kimg``: the 32-px L1 imitation runs while fewer images were seen; ``lm_kimg`` (default
        ``l1_kimg``): the R-Net/identity terms run from then on (a fine-tuning run sets 0 and a huge ``l1_kimg`` to
        keep both); ``weights`` overrides entries of :attr:`WEIGHTS` (0 switches a term off); ``head``: an
        ``engine.face.head.HeadModel`` whose render (face + mouth interior + eyes, without the neck / back of the
        head, which photos cover with hair) becomes the target of the L1 imitation instead of the face-only render,
        so an open mouth has teeth and tongue to imitate and the eyes whites and irises."""
        self.renderer = renderer
        self.perception = perception
        self.res = resolution
        self.l1_res = min(l1_res, resolution)
        self.l1_kimg = l1_kimg
        self.lm_kimg = l1_kimg if lm_kimg is None else lm_kimg
        self.stage2_kimg = stage2_kimg
        self.lm_weight_stage2 = lm_weight_stage2
        unknown = set(weights or {}) - set(self.WEIGHTS)
        if unknown:
            raise ValueError(f"unknown loss weight(s) {', '.join(sorted(unknown))}; known: {', '.join(self.WEIGHTS)}")
        self.weights = {**self.WEIGHTS, **(weights or {})}
        self.head = head
        if head is not None:
            self.head_renderer = FaceRenderer(head, camera=renderer.camera)
            imitated = torch.tensor([n != "head_neck" for n in head.part_names])
            self._imitated_triangle = imitated[head.triangle_part]

    def imitation_target(self, c: Coefficients):
        """What the L1 imitation compares G(λ) with: (image, mask) of the face render at G's resolution, or with a
        head model the head render at the L1 resolution, masked to face, mouth and eye parts."""
        if self.head is None:
            r = self.renderer(c, self.res)
            return r.image, r.mask
        r = self.head_renderer(c, self.l1_res)
        fid = r.fragments.face_id
        keep = (fid >= 0) & self._imitated_triangle.to(fid.device)[fid.clamp_min(0)]
        return r.image, keep.to(r.image.dtype).unsqueeze(1)

    def phase(self, images_seen: int) -> str:
        """Which imitative/contrastive phase a G step at ``images_seen`` is in (DESIGN §1): ``imitative`` (stage 1)
        or ``contrastive`` (stage 2, pairs added)."""
        return "contrastive" if self.stage(images_seen) == 2 else "imitative"

    def stage(self, images_seen: int) -> int:
        return 2 if images_seen >= self.stage2_kimg * 1000 else 1

    # -- individual terms (all take images in [0, 1]) --------------------------------------------------
    def l1_term(self, img01, rend_img, rend_mask):
        r = self.l1_res
        m = (downsample(rend_mask, r) > 0.5).to(img01.dtype)
        return masked_mean(colour_distance(downsample(img01, r), downsample(rend_img, r)), m)

    def skin_term(self, img01, rend_img, rend_mask):
        den = rend_mask.flatten(1).sum(1).clamp_min(1.0)[:, None]
        mg = (img01 * rend_mask).flatten(2).sum(2) / den
        mr = (rend_img * rend_mask).flatten(2).sum(2) / den
        return ((mg - mr).pow(2).sum(1) + 1e-8).sqrt().mean()

    def landmarks_of(self, c: Coefficients) -> torch.Tensor:
        return self.renderer.landmarks(c, self.res) / self.res

    def landmark_light_terms(self, img01, c: Coefficients):
        est = self.perception.estimate(img01)
        lm = ((self.landmarks_of(est) - self.landmarks_of(c)).pow(2).sum(-1)).mean()
        light = (est.light - c.light).abs().mean()
        return lm, light

    def identity_term(self, img01, rend_img, rend_mask):
        e_g = self.perception.embed(img01, rend_mask)
        e_r = self.perception.embed(rend_img)
        return torch.clamp(1 - cosine(e_g, e_r), min=0.3).mean()

    # -- stage 1 --------------------------------------------------------------------------------------
    def imitative(self, img: torch.Tensor, c: Coefficients, images_seen: int, rend=None) -> dict:
        """Weighted imitative terms for G images ``img`` (in [-1, 1]) of coefficients ``c``. Returns a dict of
        tensors including ``total``; keys present tell which terms ran."""
        img01 = to01(img.float())
        if rend is None:
            rend = self.imitation_target(c)
        rend_image, rend_mask = (rend.image, rend.mask) if hasattr(rend, "image") else rend
        out = {}
        W = self.weights
        rnet = self.perception.rnet if W["landmark"] or W["light"] else None
        idnet = self.perception.idnet if W["identity"] else None
        late = images_seen >= self.lm_kimg * 1000
        l1_on = images_seen < self.l1_kimg * 1000
        if (l1_on or rnet is None) and W["l1"]:
            if not l1_on:
                self.perception.say("l1_kept", "note: no R-Net, so the 32-px L1 imitation term stays on after "
                                               f"{self.l1_kimg} kimg")
            out["l1"] = W["l1"] * self.l1_term(img01, rend_image, rend_mask)
        if late:
            lm_w = W["landmark"] if self.stage(images_seen) == 1 else self.lm_weight_stage2
            if rnet is not None:
                lm, light = self.landmark_light_terms(img01, c)
                out["landmark"] = lm_w * lm
                out["light"] = W["light"] * light
            if idnet is not None:
                out["identity"] = W["identity"] * self.identity_term(img01, *self._full_res(rend_image, rend_mask))
            if W["skin"]:
                out["skin"] = W["skin"] * self.skin_term(img01, *self._full_res(rend_image, rend_mask))
        out["total"] = sum(out.values()) if out else img.new_zeros(())
        return out

    def _full_res(self, image, mask):
        if image.shape[-1] == self.res:
            return image, mask
        return (F.interpolate(image, size=(self.res, self.res), mode="bilinear", align_corners=False),
                F.interpolate(mask, size=(self.res, self.res), mode="nearest"))

    def identity_pairs(self, img_a, img_b, img_c) -> dict:
        """Identity terms on triplets: ``b`` = ``a`` with another identity latent (all else equal) must be another
        person (hinge: identity-net distance ≥ ID_MARGIN); ``c`` = ``a`` with other pose / expression / light must
        stay the same person (distance ≤ KEEP_MARGIN). Returns the weighted terms that are switched on."""
        W = self.weights
        out = {}
        if self.perception.idnet is None:
            return out
        n = img_a.shape[0]
        parts = [img_a, img_b] + ([img_c] if W["id_keep"] else [])
        emb = self.perception.embed(to01(torch.cat(parts).float()))
        ea, eb = emb[:n], emb[n:2 * n]
        if W["id_diversity"]:
            out["id_diversity"] = W["id_diversity"] * F.relu(self.ID_MARGIN - (ea - eb).norm(dim=1)).mean()
        if W["id_keep"]:
            ec = emb[2 * n:]
            out["id_keep"] = W["id_keep"] * F.relu((ea - ec).norm(dim=1) - self.KEEP_MARGIN).mean()
        return out

    # -- stage 2 --------------------------------------------------------------------------------------
    def expression_flow(self, c1: Coefficients, c2: Coefficients, rend2=None):
        """Flow image over shape 2: where each surface point of face 2 lies in image 1 (pixels), its mask,
        and the render mask of face 1. Rendering is done without gradients (the flow is a target)."""
        with torch.no_grad():
            rend2 = rend2 if rend2 is not None else self.renderer(c2, self.res)
            _, _, screen1 = self.renderer.geometry(c1, self.res)
            disp = screen1 - rend2.screen  # (B, V, 2)
            flow = interpolate(disp, rend2.fragments, self.renderer.model.triangles, 0.0)
            mask1 = self.renderer(c1, self.res).mask
        return flow, rend2.mask, mask1

    def expression_pair(self, img1, img2, c1, c2):
        """Warp G(λ1) by the 3D flow onto face 2, blur both, masked colour distance to G(λ2)."""
        flow, mask2, mask1 = self.expression_flow(c1, c2)
        a = gaussian_blur(warp_by_flow(to01(img1.float()), flow))
        b = gaussian_blur(to01(img2.float()))
        valid = 1.0 - mask1 * (1.0 - mask2)  # drop pixels face 1 covers and face 2 does not
        return self.weights["exp_pair"] * masked_mean(colour_distance(a, b), valid)

    def light_pair(self, img1, img2, c1, c2, mask):
        """Same everything but light: hair/background (outside the face mask) unchanged, same identity and
        landmarks. ``mask`` is the (shared) render mask."""
        a, b = to01(img1.float()), to01(img2.float())
        loss = masked_mean(colour_distance(a, b), 1.0 - mask)
        if self.perception.idnet is not None:
            loss = loss + 2.0 * (1 - cosine(self.perception.embed(a), self.perception.embed(b))).mean()
        if self.perception.rnet is not None:
            e1, e2 = self.perception.estimate(a), self.perception.estimate(b)
            loss = loss + 1000.0 * (self.landmarks_of(e1) - self.landmarks_of(e2)).pow(2).sum(-1).mean()
        return self.weights["light_pair"] * loss


def make_pairs(lat: Latents, factor: str, generator: torch.Generator | None = None) -> Latents:
    """Second member of contrastive pairs: the same latents with a freshly drawn ``factor`` part."""
    part = getattr(lat, factor)
    new = torch.randn(part.shape, generator=generator).to(part) if generator is not None else torch.randn_like(part)
    return lat.replace(**{factor: new})


def strong_expressions(c: Coefficients, share: float, gen: torch.Generator | None = None) -> None:
    """In place: a ``share`` of the rows get jawOpen and three random blendshapes set to U(0, 1) (the fits'
    expressions are mild, so strong ones come only from imitation samples like these)."""
    b, n = c.expression.shape
    rows = (torch.rand(b, generator=gen) < share).nonzero(as_tuple=True)[0].to(c.expression.device)
    if rows.numel() == 0:
        return
    cols = torch.stack([torch.randperm(n, generator=gen)[:3] for _ in range(rows.numel())]).to(rows.device)
    if "jawOpen" in c.exp_names:
        cols = torch.cat([cols, torch.full((rows.numel(), 1), c.exp_names.index("jawOpen"), device=rows.device)], 1)
    vals = torch.rand(cols.shape, generator=gen).to(c.expression)
    c.expression[rows[:, None], cols] = vals


def wide_poses(c: Coefficients, max_yaw_deg: float, gen: torch.Generator | None = None) -> None:
    """In place: yaw uniform in ±max_yaw_deg, pitch in ±max_yaw_deg/2 (the fits are mostly frontal, so pose
    control beyond them comes from imitation samples like these)."""
    if max_yaw_deg <= 0:
        return
    lim = math.radians(max_yaw_deg)
    c.pose[:, 0] = ((torch.rand(c.batch, generator=gen) * 2 - 1) * lim).to(c.pose)
    c.pose[:, 1] = ((torch.rand(c.batch, generator=gen) * 2 - 1) * lim / 2).to(c.pose)


class GANLoss:
    """The generator's training objective in phases, shaped like stylegan2-ada-pytorch's ``StyleGAN2Loss``.

    * **adversarial** (every step): ``d_loss`` — logistic loss of D on real vs generated images, plus lazy R1 every
      ``r1_every`` steps; ``g_loss`` — non-saturating loss of G through D. Both see images through the same
      DiffAugment ``augment`` policy (empty: none).
    * **imitative** (:meth:`DiscoLoss.imitative`, every G step): G(λ) follows the 3DMM render R(λ) — 32-px L1, then
      R-Net landmark/light, identity and skin terms (``l1_kimg`` / ``lm_kimg`` say when).
    * **contrastive** (from ``stage2_kimg``): every ``pair_every``-th G batch is made of expression or light pairs.
    * **identity** (when the ``id_diversity`` / ``id_keep`` weights are on): every ``id_every``-th G step,
      ``id_pairs`` triplets (:meth:`DiscoLoss.identity_pairs`) — random identities must look like different
      people, pose / expression / light edits like the same one.

    ``imit_yaw`` / ``imit_expr`` widen the sampled poses / strengthen expressions of the generated batch so control
    reaches beyond the fits; ``adv_weight`` scales the adversarial G term against the imitative ones.
    """

    def __init__(self, G: Generator, D, decoders: FactorDecoders, disco: DiscoLoss, r1_gamma: float = 10.0,
                 r1_every: int = 16, pair_every: int = 2, augment: str = "", adv_weight: float = 1.0,
                 imit_yaw: float = 0.0, imit_expr: float = 0.0, noise_mode: str = "random", autocast=None,
                 id_every: int = 2, id_pairs: int = 4):
        self.G, self.D, self.decoders, self.disco = G, D, decoders, disco
        self.r1_gamma, self.r1_every, self.pair_every = r1_gamma, max(1, int(r1_every)), pair_every
        self.augment = parse_policy(augment)
        self.adv_weight, self.imit_yaw, self.imit_expr = adv_weight, imit_yaw, imit_expr
        self.noise_mode = noise_mode
        self.autocast = autocast
        self.id_every, self.id_pairs = max(1, int(id_every)), int(id_pairs)

    def _ac(self):
        return self.autocast if self.autocast is not None else contextlib.nullcontext()

    def run_D(self, img: torch.Tensor) -> torch.Tensor:
        if self.augment:
            img = diff_augment(img, self.augment)
        return self.D(img)

    def phases(self, images_seen: int) -> tuple[str, ...]:
        """The loss phases active at ``images_seen``: adversarial always, then imitative or contrastive."""
        return ("adversarial", "imitative") + (("contrastive",) if self.disco.stage(images_seen) == 2 else ())

    def sample_coefficients(self, lat: Latents) -> Coefficients:
        with torch.no_grad():
            c = self.decoders.decode(lat)
            if self.imit_yaw > 0:
                wide_poses(c, self.imit_yaw)
            if self.imit_expr > 0:
                strong_expressions(c, self.imit_expr)
        return c

    def d_loss(self, real: torch.Tensor, step: int) -> dict:
        """D's loss on a real batch (in [-1, 1]) and as many fresh fakes; R1 on the lazy schedule."""
        b = real.shape[0]
        with torch.no_grad():
            lat = sample_latents(b, device=real.device)
            c = self.sample_coefficients(lat)
            with self._ac():
                fake = self.G(c, lat.noise, noise_mode=self.noise_mode)
        do_r1 = self.r1_gamma > 0 and step % self.r1_every == 0
        with self._ac():
            d_fake = self.run_D(fake.detach())
            if do_r1:
                real_in = real.detach().requires_grad_(True)
                d_real = self.run_D(real_in)
                (grad,) = torch.autograd.grad(d_real.float().sum(), real_in, create_graph=True)
                r1 = grad.float().pow(2).sum((1, 2, 3)).mean() * (self.r1_gamma / 2)
            else:
                d_real = self.run_D(real)
        out = {"d": d_logistic(d_real.float(), d_fake.float())}
        out["d_total"] = out["d"]
        if do_r1:
            out["r1"] = r1
            out["d_total"] = out["d"] + r1 * self.r1_every
        return out

    def g_loss(self, batch: int, images_seen: int, step: int, device) -> dict:
        """G's loss for one batch: adversarial + imitative; in stage 2 every ``pair_every``-th step the batch is
        made of contrastive pairs (alternating expression and light pairs)."""
        disco = self.disco
        lat = sample_latents(batch, device=device)
        kind = None
        if "contrastive" in self.phases(images_seen) and self.pair_every > 0 and step % self.pair_every == 0 \
                and batch >= 2:
            kind = "exp_pair" if (step // self.pair_every) % 2 == 0 else "light_pair"
            half = batch // 2
            base = lat[:half]
            lat = Latents.cat([base, make_pairs(base, "expression" if kind == "exp_pair" else "light")])
        c = self.sample_coefficients(lat)
        if kind is not None:  # the override drew independent poses/expressions: make the pairs share them again
            h = batch // 2
            c.pose[h:2 * h] = c.pose[:h]
            if kind == "light_pair":
                c.expression[h:2 * h] = c.expression[:h]
        with torch.no_grad():
            rend = disco.imitation_target(c)
        with self._ac():
            img = self.G(c, lat.noise, noise_mode=self.noise_mode)
            d_fake = self.run_D(img) if self.adv_weight > 0 else None
        out = {}
        total = img.new_zeros(()).float()
        if d_fake is not None:
            out["g_adv"] = g_nonsaturating(d_fake.float())
            total = total + self.adv_weight * out["g_adv"]
        imi = disco.imitative(img, c, images_seen, rend)
        total = total + imi.pop("total")
        out.update(imi)
        if kind is not None:
            h = batch // 2
            if kind == "exp_pair":
                out[kind] = disco.expression_pair(img[:h], img[h:2 * h], c[:h], c[h:2 * h])
            else:
                mask = rend[1][:h] if rend[1].shape[-1] == disco.res else disco.renderer(c[:h], disco.res).mask
                out[kind] = disco.light_pair(img[:h], img[h:2 * h], c[:h], c[h:2 * h], mask)
            total = total + out[kind]
        W = disco.weights
        if (W["id_diversity"] or W["id_keep"]) and step % self.id_every == 0 and self.id_pairs > 0:
            k = self.id_pairs
            base = sample_latents(k, device=device)
            other_id = make_pairs(base, "identity")
            edit = base.replace(**{f: torch.randn_like(getattr(base, f)) for f in ("expression", "light", "pose")})
            cc = self.sample_coefficients(Latents.cat([base, other_id, edit]))
            cc.pose[k:2 * k] = cc.pose[:k]  # the override drew new poses/expressions: keep b equal to a but for
            cc.expression[k:2 * k] = cc.expression[:k]  # identity
            noise = torch.cat([base.noise, base.noise, base.noise])
            with self._ac():
                trip = self.G(cc, noise, noise_mode="const")
            terms = disco.identity_pairs(trip[:k], trip[k:2 * k], trip[2 * k:])
            for name, v in terms.items():
                out[name] = v
                total = total + v
        out["g_total"] = total
        return out
