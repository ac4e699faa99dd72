"""punl: per-instance privacy for machine unlearning.

The stages, each reusing its artifacts (``punl.stages.pipeline``)::

    from punl.core.config import load_config
    from punl.core.store import ArtifactStore
    from punl.stages.pipeline import ensure_trained, ensure_scored, ensure_unlearned

    config = load_config("digits-quick", ["sigma=0.3"])
    store = ArtifactStore("runs/my-run/artifacts")
    scores = ensure_scored(config, store)        # one row per training point
    tables = ensure_unlearned(config, store)     # punl.core.tables.UnlearnTables: groups, attack, ...

Per-example gradients and norms for any model without BatchNorm::

    from punl import per_example_grads, per_example_grad_norms

Per-instance privacy of your own model, loss and training loop
(:class:`punl.engine.accountant.PrivacyAccountant`), and of a ledger of clipped norms::

    from punl import PrivacyAccountant, per_instance_rdp, per_instance_epsilon

Importing ``punl`` (or ``punl.core.config``) loads no torch; these names load it on first use.
"""
__version__ = "0.1.0"

__all__ = ["PrivacyAccountant", "per_example_grad_norms", "per_example_grads",
           "per_instance_epsilon", "per_instance_rdp", "__version__"]


def __getattr__(name):
    if name in ("per_example_grad_norms", "per_example_grads"):
        from .engine import pergrad
        return getattr(pergrad, name)
    if name in ("per_instance_rdp", "per_instance_epsilon"):
        from .engine import privacy
        return getattr(privacy, name)
    if name == "PrivacyAccountant":
        from .engine.accountant import PrivacyAccountant
        return PrivacyAccountant
    raise AttributeError(f"module 'punl' has no attribute {name!r}")
