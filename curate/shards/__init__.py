"""Packed token shards: the format (``format.py``, shared with train/) and the writer."""
