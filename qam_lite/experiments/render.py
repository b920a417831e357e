"""Pictures of a trained policy acting: replay evaluation episodes with MuJoCo rendering.

The episodes shown are episodes of a real evaluation. :func:`pick_episodes` runs
:func:`qam_lite.training.evaluate.evaluate` (``N`` episodes, seed ``s``, no rendering) and picks a
successful and a failed one; :func:`replay` then runs episode ``i`` of that evaluation again, alone
and with rendering, and gets exactly the same episode: the same reset seed
(:func:`~qam_lite.training.evaluate.episode_seed`), the same policy noise (the policy is called on a
batch of ``N`` rows of which row ``i`` is this episode's observation; every row of a flow policy
depends only on its own observation and noise), and MuJoCo is deterministic. A replay runs twice:
once without rendering to learn the episode's length, then again rendering ``num_frames`` evenly
spaced steps (rendering is the slow part on a CPU: a few tenths of a second a frame).

:func:`render_run` does all of it for one seed of a run folder and writes::

    episodes.png    a strip of frames: one row per episode (success, failure), step in each title
    episodes.json   provenance: run folder and step, seed, evaluation seed and its success rate,
                    the episodes' reset seeds, lengths and outcomes, MUJOCO_GL, versions, command
    <outcome>.gif   optional (``gif_frames > 0``): a short animation of each episode

Command line (``python -m qam_lite render`` is the same)::

    MUJOCO_GL=egl qam-lite render RUN_DIR --out results/.../frames [--seed-index 0]

Rendering needs an OpenGL context without a display: ``MUJOCO_GL=egl`` (a GPU driver's EGL, or
Mesa's on a CPU machine: Debian/Ubuntu ``apt-get install libegl1 libgl1-mesa-dri``) or
``MUJOCO_GL=osmesa`` (``libosmesa6``). The variable is read when MuJoCo is first imported, so set
it before anything imports ``mujoco``/``ogbench``; the command sets ``egl`` when it is unset.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

#: What to install when no OpenGL context can be made (named in every rendering error).
INSTALL_HINT = (
    "rendering needs an offscreen OpenGL context: set MUJOCO_GL=egl before anything imports "
    "mujoco/ogbench (on a GPU with its driver's EGL; on a CPU machine with Mesa: Debian/Ubuntu "
    "`apt-get install libegl1 libgl1-mesa-dri`), or MUJOCO_GL=osmesa with `apt-get install "
    "libosmesa6`; in Colab use a GPU runtime and MUJOCO_GL=egl"
)
OUTCOMES = ("success", "failure")


class RenderUnavailable(RuntimeError):
    """No offscreen OpenGL context could be created (the message says what to install)."""


class Episode(NamedTuple):
    """One replayed episode.

    Attributes:
      index: the episode's index ``i`` in its evaluation (``0 <= i < num_episodes``).
      reset_seed: the environment's reset seed, ``episode_seed(seed, i)``.
      success: whether the task was solved (the env's ``info['success']`` at the last step).
      length: environment steps taken.
      episode_return: sum of the environment's rewards.
      frames: ``(F, height, width, 3)`` uint8 images (``F = 0`` when not rendered).
      frame_steps: ``(F,)`` the number of steps taken before each frame (0: the reset state).
    """

    index: int
    reset_seed: int
    success: bool
    length: int
    episode_return: float
    frames: np.ndarray
    frame_steps: np.ndarray


#: ``MUJOCO_GL`` values MuJoCo accepts ('' = unset).
GL_BACKENDS = ("", "egl", "osmesa", "glfw")


def gl_backend() -> str:
    """The ``MUJOCO_GL`` value in effect (``''`` when unset: MuJoCo then tries GLFW)."""
    return os.environ.get("MUJOCO_GL", "").strip().lower()


def default_gl() -> str:
    """Set ``MUJOCO_GL=egl`` on Linux when it is unset and MuJoCo is not imported yet.

    Returns the value in effect. Once ``mujoco`` is imported the variable has been read, so
    nothing is changed then.
    """
    if not gl_backend() and sys.platform.startswith("linux") and "mujoco" not in sys.modules:
        os.environ["MUJOCO_GL"] = "egl"
    return gl_backend()


def make_render_env(task, width: int = 160, height: int = 120, *, shadows: bool = True):
    """A single-task OGBench env for ``task`` (name or ``Task``) that renders ``(H, W, 3)`` frames.

    The same environment as evaluation's (:func:`qam_lite.training.envpool.make_env`) with OGBench's
    offscreen renderer sized ``width x height``. ``shadows=False`` turns shadows off (about three
    times faster with Mesa's software renderer). Frames come from :func:`render_frame`.
    """
    import ogbench

    from qam_lite.data.tasks import parse_task

    if width < 16 or height < 16:
        raise ValueError(f"frame size {width}x{height} is invalid; accepted: width, height >= 16")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*precision lowered.*")
        # gymnasium's registry lists no render modes for OGBench's envs; they render all the same.
        warnings.filterwarnings("ignore", message=".*render_mode.*")
        env = ogbench.make_env_and_datasets(
            parse_task(task).name,
            env_only=True,
            render_mode="rgb_array",
            width=int(width),
            height=int(height),
        )
    env.unwrapped._qam_lite_shadows = bool(shadows)
    return env


def render_frame(env) -> np.ndarray:
    """The current scene of ``env`` (from :func:`make_render_env`, after a reset) as uint8 RGB.

    Raises:
      RenderUnavailable: no OpenGL context (the message says what to install).
    """
    try:
        frame = env.render()
    except Exception as err:  # MuJoCo raises FatalError, AttributeError, ImportError, ...
        raise RenderUnavailable(
            f"cannot render with MUJOCO_GL={gl_backend() or '(unset)'}: "
            f"{type(err).__name__}: {err}. {INSTALL_HINT}"
        ) from err
    if not getattr(env.unwrapped, "_qam_lite_shadows", True):
        import mujoco

        renderer = getattr(env.unwrapped, "_renderer", None)
        flags = getattr(getattr(renderer, "scene", None), "flags", None)
        if flags is not None and flags[mujoco.mjtRndFlag.mjRND_SHADOW]:
            flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False  # the first frame made the renderer
            frame = env.render()
    if frame is None:
        raise RenderUnavailable(f"the environment returned no frame; {INSTALL_HINT}")
    return np.asarray(frame, dtype=np.uint8)


def frame_schedule(length: int, num_frames: int) -> np.ndarray:
    """``num_frames`` evenly spaced steps in ``[0, length]``, both ends included (unique)."""
    if length < 0 or num_frames < 1:
        raise ValueError(
            f"length={length}, num_frames={num_frames} are invalid; accepted: length >= 0, "
            "num_frames >= 1"
        )
    if num_frames == 1:
        return np.array([length])
    return np.unique(np.round(np.linspace(0, length, num_frames)).astype(int))


def _rollout(act, state, env, *, seed, episode, num_episodes, obs_dim, max_steps, frames_at):
    """Episode ``episode`` of evaluation ``(seed, num_episodes)``, rendered at ``frames_at``."""
    import jax.numpy as jnp

    from qam_lite.training.evaluate import episode_seed, policy_key, pool_size, reset_env, waves

    reset_seed = episode_seed(seed, episode)
    obs, _ = reset_env(env, reset_seed)
    # The episode sits where `evaluate` puts it (its wave, its row, the wave's padded size), so
    # the policy call is the evaluation's own, row for row.
    groups = waves(num_episodes, pool_size(num_episodes))
    wave = next(g for g in groups if episode in g)
    row = int(np.flatnonzero(wave == episode)[0])
    rows = jnp.asarray(np.resize(wave, len(groups[0])))
    batch = np.zeros((len(groups[0]), obs_dim), np.float32)
    key = policy_key(seed)
    action_dim = int(np.prod(env.action_space.shape))
    frames, steps = [], []

    def snap(t):
        if t in frames_at:
            frames.append(render_frame(env))
            steps.append(t)

    t, total, success, chunk = 0, 0.0, False, 0
    snap(0)
    while True:
        batch[row] = obs
        out = np.asarray(act(state, jnp.asarray(batch), rows, key, chunk))
        chunk += 1
        done = False
        for a in out[row].reshape(-1, action_dim):
            ob, reward, terminated, truncated, info = env.step(a)
            obs = np.asarray(ob, np.float32)
            t += 1
            total += float(reward)
            snap(t)
            if terminated or truncated or (max_steps is not None and t >= max_steps):
                success, done = bool(info.get("success", 0.0)), True
                break
        if done:
            break
    frames = np.stack(frames) if frames else np.zeros((0, 1, 1, 3), np.uint8)
    return Episode(episode, reset_seed, success, t, total, frames, np.asarray(steps, int))


def replay(
    agent,
    state,
    env,
    *,
    seed: int,
    episode: int,
    num_episodes: int,
    num_frames: int = 6,
    max_steps: int | None = None,
) -> Episode:
    """Replay episode ``episode`` of ``evaluate(agent, state, task, num_episodes, seed)``, rendered.

    Args:
      agent: an ``Agent`` (``act(state, obs (B, obs_dim), key) -> (B, H * A)``).
      state: one seed's state (e.g. ``load_run(dir).seed_state(0)``).
      env: from :func:`make_render_env` (reused between replays).
      seed, num_episodes: the evaluation's seed and size (they fix the reset seed and the noise).
      episode: which episode, ``0 <= episode < num_episodes``.
      num_frames: frames to render, evenly spaced over the episode (0: none; the episode is then
        run once).
      max_steps: optional cap on the episode's length (as ``evaluate``'s).

    Returns:
      an :class:`Episode` whose ``success``, ``length`` and ``episode_return`` equal that
      evaluation's episode ``episode``.
    """
    if not 0 <= episode < num_episodes:
        raise ValueError(
            f"episode={episode} is invalid for num_episodes={num_episodes}; accepted: "
            f"0 <= episode < {num_episodes}"
        )
    if num_frames < 0:
        raise ValueError(f"num_frames={num_frames} is invalid; accepted: an integer >= 0")
    from qam_lite.training.evaluate import episode_actions

    act = episode_actions(agent.act)
    kw = dict(
        seed=seed,
        episode=episode,
        num_episodes=num_episodes,
        obs_dim=agent.obs_dim,
        max_steps=max_steps,
    )
    first = _rollout(act, state, env, frames_at=frozenset(), **kw)
    if num_frames == 0:
        return first
    wanted = frozenset(frame_schedule(first.length, num_frames).tolist())
    again = _rollout(act, state, env, frames_at=wanted, **kw)
    if (again.length, again.success) != (first.length, first.success):
        raise RuntimeError(
            f"episode {episode} did not replay identically (length {first.length} then "
            f"{again.length}); the environment or the policy is not deterministic"
        )
    return again


def pick_episodes(
    outcomes: Sequence[int | bool], wanted: Sequence[str] = OUTCOMES, solved: int = 1
) -> dict:
    """The first episode index of each ``wanted`` outcome (``'success'``, ``'failure'``) in
    ``outcomes`` (0/1 per episode); an outcome that never happened is left out.

    ``solved > 1`` picks up to that many successful episodes, named ``success``, ``success-2``,
    ... in episode order.
    """
    bad = [w for w in wanted if w not in OUTCOMES]
    if bad:
        raise ValueError(f"outcomes {bad} are invalid; accepted: {', '.join(OUTCOMES)}")
    if solved < 1:
        raise ValueError(f"solved={solved} is invalid; accepted: an integer >= 1")
    flags = [bool(o) for o in outcomes]
    found = {}
    for name in wanted:
        hits = [i for i, f in enumerate(flags) if f == (name == "success")]
        for k, index in enumerate(hits[: solved if name == "success" else 1]):
            found[name if k == 0 else f"{name}-{k + 1}"] = index
    return found


def frame_strip_png(episodes: dict[str, Episode], *, title: str = "", dpi: int = 100) -> bytes:
    """PNG of each episode's frames in one row (rows in the dict's order), the step on each frame.

    Raises:
      ValueError: no episode, or an episode without frames.
    """
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:  # keep a notebook's (inline) backend
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from qam_lite.plotting import figure_png

    if not episodes or any(len(e.frames) == 0 for e in episodes.values()):
        raise ValueError("frame_strip_png needs at least one episode, each with frames")
    cols = max(len(e.frames) for e in episodes.values())
    h, w = next(iter(episodes.values())).frames.shape[1:3]
    scale = 1.6 / w  # inches per pixel: 1.6 in per frame
    fig, axes = plt.subplots(
        len(episodes),
        cols,
        figsize=(cols * w * scale, len(episodes) * (h * scale + 0.35) + (0.3 if title else 0)),
        squeeze=False,
    )
    for row, (name, ep) in zip(axes, episodes.items(), strict=True):
        for j, ax in enumerate(row):
            ax.set_axis_off()
            if j < len(ep.frames):
                ax.imshow(ep.frames[j])
                ax.set_title(f"step {ep.frame_steps[j]}", fontsize=7, pad=2)
        verdict = "solved" if ep.success else "unsolved"
        row[0].text(
            -0.06,
            0.5,
            f"{name}\n(episode {ep.index},\n{verdict} after\n{ep.length} steps)",
            transform=row[0].transAxes,
            ha="right",
            va="center",
            fontsize=7,
        )
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout(pad=0.3)
    return figure_png(fig, dpi)


def gif_bytes(frames: np.ndarray, *, duration_ms: int = 150) -> bytes:
    """An animated GIF (looping) of ``frames (F, H, W, 3)`` uint8."""
    from PIL import Image

    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be (F, H, W, 3) with F >= 1, got {frames.shape}")
    images = [Image.fromarray(f).convert("P", palette=Image.Palette.ADAPTIVE) for f in frames]
    buffer = io.BytesIO()
    images[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=duration_ms,
        loop=0,
        optimize=True,
    )
    return buffer.getvalue()


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("mujoco", "ogbench", "gymnasium", "jax"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def render_run(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    seed_index: int = 0,
    eval_seed: int = 10_000,
    num_episodes: int = 10,
    num_frames: int = 6,
    width: int = 160,
    height: int = 120,
    shadows: bool = True,
    gif_frames: int = 0,
    max_steps: int | None = None,
    workers: int | None = None,
    solved: int = 1,
    command: str | None = None,
) -> dict[str, Any]:
    """Evaluate one seed of ``run_dir``, replay successful and failed episodes with frames.

    Writes ``episodes.png``, ``episodes.json`` (returned) and, with ``gif_frames > 0``,
    ``success.gif`` / ``failure.gif`` into ``out_dir`` (``solved > 1``: up to that many
    successful episodes, ``success-2.gif`` ...). When every episode succeeded (or none
    did) only the outcome that happened is shown, and ``episodes.json`` says which is missing.

    Args:
      run_dir: a run folder with ``checkpoint.npz`` (``qam-lite train``'s).
      seed_index: which of the run's seeds (``0 .. num_seeds - 1``).
      eval_seed: the evaluation's seed (10,000 + seed_index is what ``qam-lite evaluate`` uses;
        the training loop's periodic evaluations use others).
      num_episodes: episodes evaluated to find both outcomes.
      num_frames: frames per episode in the strip; ``gif_frames``: frames per GIF (0: no GIF).
      width, height, shadows: see :func:`make_render_env`.
      solved: how many successful episodes to show (the first ones; one failed episode).
      command: the command line recorded in the provenance (default: this process's).
    """
    from qam_lite.atomic import make_folder
    from qam_lite.training import logs
    from qam_lite.training.evaluate import evaluate
    from qam_lite.training.rundir import load_run

    if gl_backend() not in GL_BACKENDS:  # MuJoCo would raise a bare RuntimeError on import
        raise RenderUnavailable(
            f"MUJOCO_GL={gl_backend()!r} is invalid; accepted: {', '.join(GL_BACKENDS[1:])} "
            f"(or unset). {INSTALL_HINT}"
        )
    out = make_folder(out_dir, "render --out")
    run = load_run(run_dir)
    state = run.seed_state(seed_index)
    env = make_render_env(run.config.task, width, height, shadows=shadows)
    render_frame(_reset(env))  # fail early, before the evaluation, if nothing can render
    start = time.perf_counter()
    result = evaluate(
        run.agent,
        state,
        run.config.task,
        num_episodes,
        eval_seed,
        max_steps=max_steps,
        workers=workers,
    )
    picked = pick_episodes(result["successes"], solved=solved)
    episodes, gifs = {}, {}
    for name, index in picked.items():
        kw = dict(seed=eval_seed, episode=index, num_episodes=num_episodes, max_steps=max_steps)
        episodes[name] = replay(run.agent, state, env, num_frames=num_frames, **kw)
        if gif_frames > 0:
            anim = replay(run.agent, state, env, num_frames=gif_frames, **kw)
            gifs[name] = gif_bytes(anim.frames)
    seconds = time.perf_counter() - start
    from qam_lite.atomic import write_bytes

    title = (
        f"{run.config.agent} (tau = {run.config.tau:g}) on {run.config.task}, seed "
        f"{run.config.seed + seed_index}, step {run.step}"
    )
    if episodes:
        write_bytes(out / "episodes.png", frame_strip_png(episodes, title=title))
    for name, data in gifs.items():
        write_bytes(out / f"{name}.gif", data)
    prov = logs.provenance(
        run_dir=str(run_dir),
        task=run.config.task,
        agent=run.config.agent,
        tau=run.config.tau,
        run_step=int(run.step),
        seed=run.config.seed + seed_index,
        seed_index=seed_index,
        eval_seed=eval_seed,
        eval_episodes=num_episodes,
        eval_successes=[int(s) for s in result["successes"]],
        eval_success_rate=result["success_rate"],
        missing=[o for o in OUTCOMES if o not in picked],
        solved_wanted=int(solved),
        episodes={
            name: {
                "index": e.index,
                "reset_seed": e.reset_seed,
                "success": e.success,
                "length": e.length,
                "episode_return": e.episode_return,
                "frame_steps": e.frame_steps.tolist(),
            }
            for name, e in episodes.items()
        },
        files=(["episodes.png"] if episodes else []) + [f"{n}.gif" for n in gifs],
        frame_size=[int(width), int(height)],
        shadows=bool(shadows),
        mujoco_gl=gl_backend() or None,
        versions=_versions(),
        seconds=round(seconds, 1),
    )
    if command is not None:
        prov["command"] = command
    logs.write_json(out / "episodes.json", prov)
    return prov


def _reset(env):
    from qam_lite.training.evaluate import reset_env

    reset_env(env, 0)
    return env


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``qam-lite render`` arguments (the CLI calls this)."""
    p.add_argument("run_dir", help="run folder with checkpoint.npz (from `qam-lite train`)")
    p.add_argument("--out", required=True, help="folder for episodes.png/.json (and GIFs)")
    p.add_argument("--seed-index", type=int, default=0, help="which seed of the run (default 0)")
    p.add_argument("--eval-seed", type=int, default=10_000, help="evaluation seed (10000)")
    p.add_argument("--episodes", type=int, default=10, help="episodes evaluated (10)")
    p.add_argument("--frames", type=int, default=6, help="frames per episode in the strip (6)")
    p.add_argument("--gif-frames", type=int, default=0, help="frames per GIF (0: no GIF)")
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--height", type=int, default=120)
    p.add_argument("--no-shadows", action="store_true", help="faster with software rendering")
    p.add_argument("--max-steps", type=int, default=None, help="cap on episode length")
    p.add_argument("--workers", type=int, default=None, help="evaluation worker processes")
    p.add_argument("--solved", type=int, default=1, help="successful episodes to show (1)")


def run_cli(args: argparse.Namespace) -> None:
    """``qam-lite render``: :func:`render_run` with the command line's arguments, then a summary.

    ``args`` comes from the ``qam-lite`` parser (``args.command_line`` is the provenance's
    command); errors propagate for the CLI to report.
    """
    default_gl()
    prov = render_run(
        args.run_dir,
        args.out,
        seed_index=args.seed_index,
        eval_seed=args.eval_seed,
        num_episodes=args.episodes,
        num_frames=args.frames,
        width=args.width,
        height=args.height,
        shadows=not args.no_shadows,
        gif_frames=args.gif_frames,
        max_steps=args.max_steps,
        workers=args.workers,
        solved=args.solved,
        command=args.command_line,
    )
    shown = ", ".join(f"{k} (episode {v['index']})" for k, v in prov["episodes"].items())
    print(
        f"{prov['eval_success_rate']:.0%} of {prov['eval_episodes']} episodes solved; rendered "
        f"{shown or 'nothing'} in {prov['seconds']:.0f} s -> {args.out}"
    )
    if prov["missing"]:
        print(f"no {' or '.join(prov['missing'])} episode among {prov['eval_episodes']}")
    print(json.dumps(prov["files"]))
