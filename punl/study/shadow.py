"""Shadow-model difficulty scores (optional: ``shadow_models > 0``).

S shadow models are trained with the configuration's own noisy SGD, each on a random half of the
training set (membership drawn per model from its own stream). For point x, with IN(x) the
shadow models that trained on it and OUT(x) the others:

- memorisation (Feldman & Zhang 2020):
      mem(x) = mean_{k in IN(x)} 1[f_k(x) = y] - mean_{k in OUT(x)} 1[f_k(x) = y]
- LiRA vulnerability (Carlini et al. 2022, online, global variances): with phi the
  logit-scaled confidence, mu_in(x), mu_out(x) its per-point means and sd_in, sd_out the pooled
  standard deviations, the mean over the R trained models of the log likelihood ratio
      Lambda(x) = log N(phi_target(x); mu_in(x), sd_in) - log N(phi_target(x); mu_out(x), sd_out).
"""
from __future__ import annotations

import numpy as np
from scipy import stats

from ..engine.multimodel import many_logits
from .groups import stream_seed
from .mia import lira_phi
from ..engine.recipe import fit, from_scratch, init_model


def shadow_memberships(n: int, n_models: int, seed: int) -> np.ndarray:
    """[S, n] bool: model k trains on a uniformly random half of the n points."""
    out = np.zeros((n_models, n), dtype=bool)
    for k in range(n_models):
        rng = np.random.default_rng(stream_seed(seed, "shadow-membership", k))
        out[k, rng.permutation(n)[: n // 2]] = True
    return out


def train_shadows(config, data, members: np.ndarray) -> list:
    """One model per row of ``members``, trained with the configuration's recipe on those points
    (all together, each with its own seeds)."""
    return fit(config, data, [from_scratch(config, data,
                                           (stream_seed(config.seed, "shadow-init", k),
                                            stream_seed(config.seed, "shadow-noise", k)),
                                           np.flatnonzero(mask))
                              for k, mask in enumerate(members)])


def memorisation(correct: np.ndarray, members: np.ndarray) -> np.ndarray:
    """mean correctness when trained on minus when not: [S, n] arrays -> [n] (NaN if no split)."""
    c = correct.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        inside = (c * members).sum(0) / members.sum(0)
        outside = (c * ~members).sum(0) / (~members).sum(0)
    return inside - outside


def lira_scores(phi_shadow: np.ndarray, members: np.ndarray, phi_target: np.ndarray) -> np.ndarray:
    """Mean over target models [R, n] of the in/out Gaussian log likelihood ratio -> [n]."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mu_in = (phi_shadow * members).sum(0) / members.sum(0)
        mu_out = (phi_shadow * ~members).sum(0) / (~members).sum(0)
    sd_in = np.std((phi_shadow - mu_in)[members]) + 1e-6
    sd_out = np.std((phi_shadow - mu_out)[~members]) + 1e-6
    ratio = stats.norm.logpdf(phi_target, mu_in, sd_in) - stats.norm.logpdf(phi_target, mu_out, sd_out)
    return ratio.mean(0)


def shadow_scores(config, data, final_params: list) -> dict[str, np.ndarray]:
    """``memorisation`` and ``lira_score`` for every training point."""
    members = shadow_memberships(data.n_train, config.shadow_models, config.seed)
    model = init_model(config, data, 0)
    logits = many_logits(model, train_shadows(config, data, members), data.x_train)
    phi = lira_phi(logits, data.y_train).double().cpu().numpy()
    correct = (logits.argmax(-1) == data.y_train).cpu().numpy()
    final_params = [{k: v.to(data.x_train.device) for k, v in p.items()} for p in final_params]
    target = lira_phi(many_logits(model, final_params, data.x_train),
                      data.y_train).double().cpu().numpy()
    return {"memorisation": memorisation(correct, members),
            "lira_score": lira_scores(phi, members, target)}
