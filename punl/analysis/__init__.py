"""What the study's tables say: censoring-aware fits (:mod:`.fits`), the log-law test
(:mod:`.lawtest`), power (:mod:`.power`), the measurements the claims and chapters read
(:mod:`.measures`), the loss barriers of claim 4 and the paper's barrier figure
(:mod:`.barriers`), the per-point claims (:mod:`.pointclaims`), the claims table
(:mod:`.claims`), each chapter's "What we found" (:mod:`.findings`) and the predictions of
unlearning cost (:mod:`.predict`, :mod:`.heldout`, :mod:`.adaptive`, :mod:`.pointpredict`).

May import: :mod:`punl.core`, :mod:`punl.engine`, :mod:`punl.study`. A new claim is one
:class:`.claims.Claim` in :data:`.claims.CLAIMS_TESTED` with its test function.
"""
