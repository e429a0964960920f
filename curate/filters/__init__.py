"""Filter stages, one module per family: langid, heuristics, quality, toxicity, pii."""
