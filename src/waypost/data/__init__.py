"""Reading tables, inferring column types and per-type preprocessing (fitted state is JSON, never pickled)."""
