"""qam-lite: Q-learning with Adjoint Matching, as a book and a small JAX library.

Layers (each imports only from those above it)::

    flows / sde / adjoint    pure maths on arrays (book Part I)
    networks                 velocity-field MLPs and critic ensembles (Flax NNX)
    toys / toytrain          exact toy answers, and small trainers for the toy chapters
    agents                   QAM and baselines
    data                     OGBench loading, local generation, action-chunk sampling
    train / evaluate         fused updates, evaluation, logs, checkpoints
    cli                      the ``qam-lite`` command
"""

__version__ = "0.1.0"
