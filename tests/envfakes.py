"""Picklable environments for the evaluation tests (worker processes import this module, so it
imports no JAX and stays quick to load)."""

import functools
from types import SimpleNamespace

import numpy as np


class SeededEnv:
    """Episode length and success follow from the reset seed (a stand-in for a real task)."""

    def __init__(self):
        self.action_space = SimpleNamespace(shape=(2,))

    def reset(self, seed=None):
        rng = np.random.default_rng(seed)
        self.end, self.t = int(rng.integers(3, 12)), 0
        self.goal = rng.uniform(-1, 1, 2)
        return np.concatenate([self.goal, [0.0, 0.0]]).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        # Success depends on the actions taken, so policy noise matters too.
        near = float(np.dot(np.asarray(action), self.goal) > 0)
        done = self.t >= self.end
        obs = np.concatenate([self.goal, [self.t, near]]).astype(np.float32)
        return obs, near, done and near > 0, done and near == 0, {"success": near if done else 0}


class ObservationSumReward:
    """A real environment whose reward is the sum of its observation: returns then fingerprint
    the whole trajectory."""

    def __init__(self, env):
        self.env, self.action_space = env, env.action_space

    def reset(self, seed=None):
        return self.env.reset(seed=seed)

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        return obs, float(np.sum(obs)), terminated, truncated, info


def real_env(task: str):
    from qam_lite.training.envpool import make_env

    return ObservationSumReward(make_env(task))


def real_env_fn(task: str):
    return functools.partial(real_env, task)
