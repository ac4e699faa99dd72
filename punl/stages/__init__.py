"""The stages run end to end, each reusing its artifacts: what is checked before any work
(:mod:`.resources`: what a configuration asks of the machine, against stated limits;
:mod:`.preflight`: every check before work; :mod:`.convergence`: whether training gave a model
worth unlearning from) and the stages themselves (:mod:`.pipeline`: train, score, the per-point
study, unlearn, the derived tables), and what they will cost on this machine, predicted from a
short probe of each (:mod:`.forecast`, ``punl plan``).

May import: every layer above it (core, engine, study, analysis).
"""
