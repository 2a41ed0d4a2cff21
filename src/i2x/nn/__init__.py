"""The torch side of i2x: everything that touches a model.

``models`` (built-in architectures), ``layers`` (target-layer detection), ``saliency`` (GradCAM
and friends), ``record`` (the :class:`Recorder`), ``train`` (the training loop), ``pipeline``
(``run`` / ``analyze`` / ``analyze_checkpoints``) and ``finetune`` (stage 8). Nothing outside
this package imports torch at module level; ``tests/test_architecture.py`` checks it.
"""
