"""OGBench data: task names and domains, loading and checking dataset files, generating them
locally with OGBench's own oracles, and the online replay buffer.

``tasks``     task and domain names, the published dataset sizes (no OGBench import)
``datasets``  ``load(task)``: the files ``ogbench.make_env_and_datasets`` reads, checked
``generate``  ``generate(dataset)``: play / navigate data from OGBench's scripted oracles
``replay``    the offline dataset followed by a ring of online transitions

Imports only the top level of :mod:`qam_lite` (never ``training`` or ``experiments``).
"""
