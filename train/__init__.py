"""Compact GPT pretraining on Sluice token shards.

- ``train.model``: ``GPTConfig``, ``GPT`` (Llama-style decoder), ``SIZES``;
- ``train.data``: ``ShardSplit``, ``TrainLoader`` (memory-mapped, deterministic, rank-disjoint,
  resumable), ``val_batches``;
- ``train.parallel``: ``init_distributed``, ``apply_fsdp`` (FSDP2), ``apply_compile``;
- ``train.checkpoint``: DCP ``save_checkpoint`` / ``load_checkpoint``, ``CheckpointError``;
- ``train.trainer``: ``TrainConfig``, ``train(cfg, shards_dir, out_dir, resume=True)``;
- ``train.cli``: ``main(argv)`` behind ``sluice train``.

Only ``curate.shards.format`` is imported from curate/.
"""
