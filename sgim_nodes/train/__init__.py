"""Training an audio encoder into an open_clip model's embedding space (the paper's recipe).

- ``python -m sgim_nodes.train`` / ``python -m sgim_nodes train`` / ``sgim-train``: the command line
  (:mod:`.__main__`); ``torchrun --nproc-per-node N -m sgim_nodes.train ...`` for several processes.
- :mod:`.loop`: ``TrainConfig`` and ``train(config) -> exported encoder path``.
- :mod:`.data`: dataset readers (manifest CSV, VGGSound, ESC-50, UrbanSound8K, class folders), the
  training dataset with feature cache, the resumable distributed batch sampler, frozen CLIP targets.
- :mod:`.losses`: symmetric InfoNCE terms, temperature, all-gathered negatives.
- :mod:`.augment`: SpecAugment and offline text augmentation.
- :mod:`.synthetic`: a synthetic sound-class dataset (``make-synthetic-dataset``).

Evaluation (zero-shot and linear probe) is :mod:`sgim_nodes.evaluate`.
"""
