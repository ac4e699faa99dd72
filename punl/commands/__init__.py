"""The commands: one run with its chapters (:mod:`.runner`), sweeps (:mod:`.sweep`) and the
command line (:mod:`.cli`).

May import: every layer.
"""
