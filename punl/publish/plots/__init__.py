"""The book's figures: each function draws one figure from tables the package computed.

Functions take tables (and the few settings they show), return the matplotlib Figure, and never
compute a number the tables do not hold, apart from the summaries a figure draws (means and
quantiles over runs). Every figure is sized for the book's text column (:data:`WIDTH` inches
at :data:`DPI`, drawn at twice the resolution in notebooks), with labelled axes and legends
outside the data.

One module per chapter (``training``, ``scores``, ``unlearning``, ``barriers``, ``prediction``)
and one for figures across runs (``runs``); ``style`` holds what they share. The per-point
study's figures are :mod:`punl.publish.pointplots`.
"""
from .style import (DPI, MIN_FONT, WIDTH, categorical_palette, drawn_texts, legend_below,
                    legend_right, log_ticks, ordered_palette, plain, score_label, set_style,
                    text_collisions)
from .training import clipped_fraction_curve, norm_trajectories, training_curves
from .scores import correlation_heatmap, extreme_images, privacy_histogram
from .unlearning import (STATUS_MARKERS, UTILITY_SETS, amplitude_against_score, attack_curves,
                         disagreement_bars, point_fraction_bars, response_curves,
                         steps_against_score, utility_curves)
from .barriers import barrier_trajectories, controlled_barrier_figure, hard_easy_paths
from .prediction import (KIND_MARKERS, adaptive_against_fixed, cost_curves,
                         predicted_against_measured, validation_bars)
from .runs import VERDICT_MARKERS, claims_against, headline_figure, sweep_overview

__all__ = [
    'DPI', 'KIND_MARKERS', 'MIN_FONT', 'STATUS_MARKERS', 'UTILITY_SETS', 'VERDICT_MARKERS',
    'WIDTH', 'adaptive_against_fixed', 'amplitude_against_score', 'attack_curves',
    'barrier_trajectories', 'categorical_palette', 'claims_against',
    'clipped_fraction_curve', 'controlled_barrier_figure', 'hard_easy_paths', 'correlation_heatmap',
    'cost_curves', 'disagreement_bars', 'drawn_texts', 'extreme_images', 'headline_figure',
    'legend_below', 'legend_right', 'log_ticks', 'norm_trajectories', 'ordered_palette',
    'plain', 'point_fraction_bars', 'predicted_against_measured',
    'privacy_histogram', 'response_curves', 'score_label', 'set_style',
    'steps_against_score', 'sweep_overview', 'text_collisions', 'training_curves',
    'utility_curves', 'validation_bars']
