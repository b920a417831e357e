"""qam-lite: Q-learning with Adjoint Matching, as a book and a small JAX library.

Layers, bottom to top (each imports only from its own layer and those below it; a test checks)::

    flows, sde, adjoint          pure maths on arrays (book Part I)
    networks, chunks, config     Flax NNX fields and critics, action chunks, the one Config
    agents/                      QAM and its baselines, one file each
    toys, toytrain, toycritics   exact toy answers and small trainers for chapters 1-7
    widgets, plotting, modes     tau sliders, the figure style, quick/batch flags
    data/                        OGBench tasks, loading, local generation, the replay buffer
    training/                    settings, compiled updates, the loop, run folders, evaluation
    experiments/ and book/       sweeps, tables, renders, probes; the book's tooling
    cli                          the ``qam-lite`` command (also ``python -m qam_lite``)
"""

__version__ = "0.1.0"
