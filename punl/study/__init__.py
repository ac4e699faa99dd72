"""The unlearning study: membership inference (:mod:`.mia`), forget groups (:mod:`.groups`),
shadow models (:mod:`.shadow`), every training point's scores (:mod:`.scores`), loss barriers
(:mod:`.barriers`), unlearning of the groups (:mod:`.unlearn`) and of each point
(:mod:`.pointwise`).

May import: :mod:`punl.core`, :mod:`punl.engine`. A new unlearning method is one decorated
function in :mod:`punl.core.methods` (its update rule); :mod:`.unlearn` runs every method.
"""
