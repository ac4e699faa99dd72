"""Training with noisy SGD and what it needs: datasets (:mod:`.data`), models (:mod:`.models`),
per-example gradients and their norms (:mod:`.pergrad`), many models stepped together
(:mod:`.multimodel`, :mod:`.sgd`), the training recipe (:mod:`.recipe`), the ledger of
per-example norms (:mod:`.ledger`), training (:mod:`.train`), privacy accounting
(:mod:`.privacy`), the same accounting for your own model and training loop
(:mod:`.accountant`) and the training metrics (:mod:`.metrics`).

May import: :mod:`punl.core`. A new dataset goes in :mod:`.data` (and its name in
:mod:`punl.core.catalog`), a new model in :mod:`.models`, a new layer type in :mod:`.pergrad`
(one module).
"""
