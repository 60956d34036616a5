"""``devourer query`` (issue 16): questions to the flow store, JSON-lines files and BigQuery, goQuery-style.

``conditions`` parses the condition language (``-c``) and compiles it to SQL.
"""
