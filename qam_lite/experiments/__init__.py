"""Experiments over trained runs: sweeps (local processes or SLURM through submitit), the
paper's released numbers, statistics and tables, rendered episodes, policy probes and
actor-gradient statistics.

``plan``       a sweep's spec, its runs and their measured cost (no JAX, no submitit)
``sweep``      running a plan: submitit jobs, requeue, CPU/GPU slots, SLURM
``stats``      95 % intervals of a mean and of a difference of means
``paper``      the paper's released per-seed numbers (``paper_data/``)
``ours``       our run folders as table cells, with marks where they differ from the paper's
``formats``    cells written out: Markdown, CSV, LaTeX, the wide table, the ranking
``table``      ``qam-lite table``: the files and the learning-curve figures
``render``     replayed episodes as frames and GIFs (MuJoCo, ``MUJOCO_GL=egl``)
``probe``      policy samples at fixed states across runs (the ``tau`` slider's data)
``gradstats``  the actor's gradient statistics during training (QAM against BAM)

Imports :mod:`qam_lite.training`, :mod:`qam_lite.data` and the top level.
"""
