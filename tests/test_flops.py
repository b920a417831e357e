"""benchmarks/flops.py: XLA's FLOP count of one update counts every flow step."""

from __future__ import annotations

import sys
from pathlib import Path

from qam_lite.agents import make_agent
from qam_lite.training.settings import make_config

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from flops import flops_per_update  # noqa: E402

OBS, ACT = 3, 2
CONFIG = make_config(
    "cube-double-play-singletask-task1-v0",
    horizon=2,
    actor_hidden=(16,),
    critic_hidden=(16,),
    num_critics=2,
    flow_steps=2,
    batch_size=8,
)


def test_flops_count_every_flow_step():
    # XLA counts a while loop's body once; the count must grow with the number of flow steps.
    small = flops_per_update(make_agent(CONFIG, OBS, ACT), CONFIG, OBS, ACT)
    config = CONFIG.replace(flow_steps=6)
    large = flops_per_update(make_agent(config, OBS, ACT), config, OBS, ACT)
    assert 0 < small < large
