"""What every stage shares, and nothing of the method: the configuration (:mod:`.config`, read from files by :mod:`.yamlfiles`, with
the datasets and models it may name in :mod:`.catalog` and the unlearning methods in
:mod:`.methods`), the columns of every table (:mod:`.tables`), the content-addressed artifact
store (:mod:`.store`), the output folders a run publishes (:mod:`.outputs`), process pools
tied to their parent (:mod:`.parallel`) and where punl's own configurations, notebook templates
and book skeleton are (:mod:`.resources`).

May import: nothing else of punl. A new configuration field goes in :mod:`.config`, a new table's
columns in :mod:`.tables`.
"""
