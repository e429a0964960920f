"""Deduplication and decontamination stages.

- :data:`curate.dedup.exact.EXACT_DEDUP` (GlobalStage ``exact_dedup``): hash of normalised text.
- :data:`curate.dedup.minhash.NEAR_DEDUP` (GlobalStage ``near_dedup``): MinHash + LSH clusters,
  then documents contained in another kept one (LSH Ensemble, ``curate.dedup.containment``).
- :data:`curate.dedup.paragraph.PARAGRAPH_DEDUP` (GlobalStage ``paragraph_dedup``, optional):
  paragraphs repeated in many documents cut out.
- Which copy survives: :class:`curate.dedup.common.KeepPolicy` (``priority`` keys).
- :data:`curate.dedup.decontam.DECONTAM` (Stage ``decontam``): n-gram overlap with eval files.
"""
