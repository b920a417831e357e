"""Training machinery: from a :class:`~qam_lite.config.Config` to a run folder.

``settings``    the paper's per-domain table, presets, ``resolve(task, agent, preset, overrides)``
``update``      many compiled updates per call (``lax.scan``), seeds vmapped, the key schedule
``train``       the run: set-up, resume, the offline loop, the summary
``online``      the online phase: acting, the replay buffer, one update per environment step
``session``     what both phases share: signals, logging, evaluation, checkpoints, NaN stop
``rundir``      a run folder: lock, config.json, provenance, data fingerprint, reading it back
``checkpoint``  atomic ``.npz`` checkpoints of a pytree
``logs``        CSV and JSON records, provenance, the run's curve
``envpool``     OGBench environments in worker processes
``evaluate``    success rate of a policy over episodes

Imports :mod:`qam_lite.data` and the top level, never :mod:`qam_lite.experiments`.
"""
