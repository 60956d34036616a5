"""``devourer query`` (issue 16): questions to the flow store, JSON-lines files and BigQuery, goQuery-style.

``spec`` checks what is asked (attributes, window, order) into a ``Query``; ``conditions`` parses the
condition language (``-c``); ``sql`` compiles a query to one statement for DuckDB or BigQuery;
``sources`` runs it on the store, JSON lines or BigQuery; ``result`` and ``render`` make the answer's
types and its text; ``command`` ties them to the command line.
"""
