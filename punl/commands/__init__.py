"""The commands: the kernel a run's notebooks share (:mod:`.kernel`), one run with its chapters
(:mod:`.runner`), sweeps (:mod:`.sweep`), the commands that prepare a run (:mod:`.listing`:
configurations, fields, a book folder, the forecast) and the command line (:mod:`.cli`).

May import: every layer.
"""
