"""Rendering episodes: a replay is exactly the evaluation's episode; frames, strips, GIFs; errors.

The real-renderer check runs in a subprocess with ``MUJOCO_GL=egl`` (the variable is read when
MuJoCo is first imported) and is skipped where no EGL context can be made.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from envfakes import SeededEnv

from qam_lite import cli
from qam_lite.experiments import render
from qam_lite.training.evaluate import evaluate

H, A, OBS = 3, 2, 4


class RenderingSeededEnv(SeededEnv):
    """SeededEnv with a ``render`` whose image encodes the step count."""

    def render(self):
        return np.full((6, 8, 3), self.t, np.uint8)

    @property
    def unwrapped(self):
        return self


def noisy_agent():
    """A row-wise policy whose output depends on its observation and on the key's noise."""
    w = jax.random.normal(jax.random.PRNGKey(1), (OBS, H * A))

    def act(state, obs, key):
        noise = jax.random.normal(key, (obs.shape[0], H * A))
        return jnp.tanh(obs @ w + 2.0 * noise)

    return SimpleNamespace(act=act, obs_dim=OBS)


def test_replay_is_the_evaluations_episode():
    agent, n, seed = noisy_agent(), 6, 3
    result = evaluate(agent, None, None, n, seed, envs=[SeededEnv() for _ in range(n)])
    assert 0 < sum(result["successes"]) < n  # both outcomes happen with this seed
    env = RenderingSeededEnv()
    for i in range(n):
        ep = render.replay(agent, None, env, seed=seed, episode=i, num_episodes=n, num_frames=3)
        assert ep.success == bool(result["successes"][i])
        assert ep.episode_return == pytest.approx(result["returns"][i])
        assert ep.frame_steps.tolist() == render.frame_schedule(ep.length, 3).tolist()
        # The frame rendered after t steps shows t: frames are taken at the scheduled steps.
        assert [int(f[0, 0, 0]) for f in ep.frames] == ep.frame_steps.tolist()
    picked = render.pick_episodes(result["successes"])
    assert result["successes"][picked["success"]] == 1
    assert result["successes"][picked["failure"]] == 0


def test_replay_arguments_are_checked():
    with pytest.raises(ValueError, match="0 <= episode < 2"):
        render.replay(noisy_agent(), None, RenderingSeededEnv(), seed=0, episode=2, num_episodes=2)
    with pytest.raises(ValueError, match="num_frames"):
        render.replay(
            noisy_agent(),
            None,
            RenderingSeededEnv(),
            seed=0,
            episode=0,
            num_episodes=1,
            num_frames=-1,
        )
    ep = render.replay(
        noisy_agent(),
        None,
        RenderingSeededEnv(),
        seed=0,
        episode=0,
        num_episodes=1,
        num_frames=0,
        max_steps=2,
    )
    assert ep.length == 2 and ep.frames.shape[0] == 0


def test_frame_schedule_spans_the_episode():
    assert render.frame_schedule(100, 5).tolist() == [0, 25, 50, 75, 100]
    assert render.frame_schedule(3, 6).tolist() == [0, 1, 2, 3]  # never more frames than steps
    assert render.frame_schedule(7, 1).tolist() == [7]
    with pytest.raises(ValueError, match="num_frames >= 1"):
        render.frame_schedule(10, 0)


def test_pick_episodes():
    assert render.pick_episodes([0, 0, 1, 0, 1]) == {"success": 2, "failure": 0}
    assert render.pick_episodes([1, 1]) == {"success": 0}
    assert render.pick_episodes([0], wanted=("failure",)) == {"failure": 0}
    several = render.pick_episodes([0, 1, 1, 0, 1, 1], solved=3)
    assert several == {"success": 1, "success-2": 2, "success-3": 4, "failure": 0}
    assert render.pick_episodes([1, 0], solved=3) == {"success": 0, "failure": 1}
    with pytest.raises(ValueError, match="solved=0 is invalid"):
        render.pick_episodes([1], solved=0)
    with pytest.raises(ValueError, match="accepted: success, failure"):
        render.pick_episodes([1], wanted=("win",))


def test_strip_and_gif_files():
    frames = np.random.default_rng(0).integers(0, 255, (3, 24, 32, 3), dtype=np.uint8)
    ep = render.Episode(4, 99, True, 30, -10.0, frames, np.array([0, 15, 30]))
    png = render.frame_strip_png({"success": ep, "failure": ep._replace(success=False)}, title="t")
    assert png.startswith(b"\x89PNG")
    gif = render.gif_bytes(frames)
    assert gif.startswith(b"GIF8")
    import io

    from PIL import Image

    with Image.open(io.BytesIO(gif)) as im:
        assert im.n_frames == 3 and im.size == (32, 24)
    with pytest.raises(ValueError, match="each with frames"):
        render.frame_strip_png({"failure": ep._replace(frames=frames[:0])})
    with pytest.raises(ValueError, match=r"\(F, H, W, 3\)"):
        render.gif_bytes(frames[..., 0])


def test_no_gl_says_what_to_install():
    class Broken:
        unwrapped = None

        def render(self):
            raise AttributeError("'NoneType' object has no attribute 'glGetError'")

    with pytest.raises(render.RenderUnavailable, match="libegl1 libgl1-mesa-dri") as err:
        render.render_frame(Broken())
    assert "MUJOCO_GL" in str(err.value)


def test_default_gl_leaves_an_imported_mujoco_alone(monkeypatch):
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setitem(sys.modules, "mujoco", object())
    assert render.default_gl() == ""
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    assert render.default_gl() == "osmesa"


REAL = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from qam_lite.experiments import render
    from qam_lite.agents import make_agent
    from qam_lite.training.settings import make_config
    from qam_lite.training.evaluate import evaluate, make_envs

    task = "scene-play-singletask-task1-v0"
    env = render.make_render_env(task, 64, 48, shadows=False)
    try:
        render.render_frame(render._reset(env))
    except render.RenderUnavailable as err:
        print(json.dumps({"skip": str(err)})); sys.exit(0)
    cfg = make_config(task, actor_hidden=(16,), critic_hidden=(16,), num_critics=2, flow_steps=2)
    agent = make_agent(cfg, 40, 5)
    state = jax.jit(agent.init)(jax.random.PRNGKey(0))
    n = 2
    with make_envs(task, n, workers=1) as envs:
        res = evaluate(agent, state, task, n, 7, envs=envs, max_steps=12)
    eps = [render.replay(agent, state, env, seed=7, episode=i, num_episodes=n, num_frames=3,
                         max_steps=12) for i in range(n)]
    print(json.dumps({
        "returns": res["returns"], "replayed": [e.episode_return for e in eps],
        "shape": list(eps[0].frames.shape), "steps": eps[0].frame_steps.tolist(),
        "std": float(eps[0].frames.std()),
        "moved": float(np.abs(eps[0].frames[0].astype(int) - eps[0].frames[-1]).mean()),
    }))
    """
)


@pytest.mark.slow
def test_real_scene_renders_and_replays(tmp_path):
    env = {**os.environ, "MUJOCO_GL": "egl", "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(
        [sys.executable, "-c", REAL], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    res = json.loads(out.stdout.strip().splitlines()[-1])
    if "skip" in res:
        pytest.skip(res["skip"])
    assert res["replayed"] == pytest.approx(res["returns"])
    assert res["shape"] == [3, 48, 64, 3]
    assert res["steps"] == [0, 6, 12]
    assert res["std"] > 5  # a scene, not a blank image
    assert res["moved"] > 0  # the arm moved between the first and last frame


def test_cli_verb_records_its_command(monkeypatch, capsys, tmp_path):
    """``qam-lite render`` (and ``python -m qam_lite render``): same exit codes, the command
    recorded as qam-lite spells it, errors in one line."""
    seen = {}

    def fake_render_run(run_dir, out_dir, **kw):
        seen.update(kw, run_dir=run_dir)
        return {
            "eval_success_rate": 0.5,
            "eval_episodes": 2,
            "episodes": {"success": {"index": 1}},
            "seconds": 3.0,
            "missing": ["failure"],
            "files": ["episodes.png"],
        }

    monkeypatch.setattr(render, "render_run", fake_render_run)
    out = str(tmp_path / "my frames")
    assert cli.main(["render", "run", "--out", out, "--episodes", "2", "--no-shadows"]) == 0
    assert seen["command"] == f"qam-lite render run --out '{out}' --episodes 2 --no-shadows"
    assert seen["num_episodes"] == 2 and seen["shadows"] is False and seen["run_dir"] == "run"
    printed = capsys.readouterr().out
    assert "50% of 2 episodes solved" in printed and "no failure episode among 2" in printed

    def unavailable(*args, **kw):
        raise render.RenderUnavailable(f"cannot render; {render.INSTALL_HINT}")

    monkeypatch.setattr(render, "render_run", unavailable)
    assert cli.main(["render", "run", "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qam-lite render: error: cannot render") and "Traceback" not in err
