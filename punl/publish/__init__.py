"""What readers see: the figures (:mod:`.plots`, :mod:`.pointplots`), how a chapter shows a
table (:mod:`.reading`), what a chapter notebook reads (:mod:`.notebook`), the plan of a run's
notebooks (:mod:`.plan`), the markdown of its pages (:mod:`.markdown`), the run chapters a book holds
(:mod:`.chapters`), its front page (:mod:`.landing`) and the book (:mod:`.book`).

May import: every layer above it (core, engine, study, analysis, stages). A new figure goes in
the :mod:`.plots` module of its chapter.
"""
