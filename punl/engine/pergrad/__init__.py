"""Per-example gradients, their norms and sums of clipped per-example gradients.

For a model f with parameters theta and the cross-entropy loss l(theta; x, y), the per-example
gradient of example i is ``g_i = d l(theta; x_i, y_i) / d theta``; its norm is the L2 norm over
all parameters together, ``||g_i|| = sqrt(sum_p ||g_i[p]||^2)``.

Two paths compute them:

- ``vmap(grad(l))`` over the batch through ``functional_call`` (:mod:`.functional`), for any
  model, in chunks so that at most ``chunk_size`` copies of the parameter vector are alive;
- the per-layer path (:mod:`.stacked`), for models whose every parameterised layer has a
  registered layer type (:mod:`.registry`): because no layer mixes examples (no BatchNorm), the
  gradient of sum_i l_i with respect to a layer's output, b, has row i equal to d l_i / d out_i,
  so one forward pass recording each layer's input a and one backward pass giving b yield each
  layer's share of ``||g_i||^2``:

  - Linear on a vector: ``||b_i a_i^T||_F^2 = ||a_i||^2 ||b_i||^2`` (weight), ``||b_i||^2``
    (bias) (:mod:`.linear`);
  - Conv2d: ``||G_i||_F^2`` with ``G_i = b_i U_i^T``, U_i the unfolded input patches, by the
    fastest of four rules timed once per configuration (:mod:`.conv2d`);
  - GroupNorm: ``sum_l b_i x_hat_i`` (weight) and ``sum_l b_i`` (bias) per channel
    (:mod:`.groupnorm`).

The same pass serves S models of one architecture at once (parameters stacked along a leading
dimension), and gives the sums of clipped per-example gradients of noisy SGD without a second
backward pass (:mod:`.clipped`).

A new layer type is one module: a stacked layer class registered with its norm rule by
:func:`.registry.layer_type`, imported below.
"""
from . import conv2d, groupnorm, linear  # noqa: F401  (each registers its layer type)
from .clipped import ClippedSums, StackingFallbackWarning, clipped_gradient_sums
from .conv2d import (CONV_STACK_LAYOUTS, CONV_WEIGHT_RULES, ConvRuleKey,
                     conv2d_example_weight_grads, conv2d_weight_rule, conv_rule_choices)
from .functional import detached_params, per_example_grads, weighted_loss_grad
from .norms import ExampleStats, per_example_grad_norms, per_example_stats
from .registry import LAYER_TYPES, LayerType, Params, layer_type
from .stacked import StackedLayer, supports_layer_norms

__all__ = ["CONV_STACK_LAYOUTS", "CONV_WEIGHT_RULES", "ClippedSums", "ConvRuleKey",
           "ExampleStats", "LAYER_TYPES", "LayerType", "Params", "StackedLayer",
           "StackingFallbackWarning", "clipped_gradient_sums", "conv2d_example_weight_grads",
           "conv2d_weight_rule", "conv_rule_choices", "detached_params", "layer_type",
           "per_example_grad_norms", "per_example_grads", "per_example_stats",
           "supports_layer_norms", "weighted_loss_grad"]
