"""Deduplication and decontamination stages.

- :data:`curate.dedup.exact.EXACT_DEDUP` (GlobalStage ``exact_dedup``): hash of normalised text.
- :data:`curate.dedup.minhash.NEAR_DEDUP` (GlobalStage ``near_dedup``): MinHash + LSH clusters.
- :data:`curate.dedup.decontam.DECONTAM` (Stage ``decontam``): n-gram overlap with eval files.
"""
