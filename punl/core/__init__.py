"""What every stage shares, and nothing of the method: the configuration (:mod:`.config`, with
the datasets and models it may name in :mod:`.catalog` and the unlearning methods in
:mod:`.methods`), the columns of every table (:mod:`.tables`), the content-addressed artifact
store (:mod:`.store`), the output folders a run publishes (:mod:`.outputs`) and process pools
tied to their parent (:mod:`.parallel`).

May import: nothing else of punl. A new configuration field goes in :mod:`.config`, a new table's
columns in :mod:`.tables`.
"""
