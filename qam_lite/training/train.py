"""The training loop: offline updates, optional online fine-tuning, evaluation, logs, checkpoints.

``train(config, out_dir)`` runs one configuration, all ``num_seeds`` seeds vmapped on one device,
and leaves a run folder (files listed in :mod:`qam_lite.training.rundir`). Read top to bottom:
:func:`train` sets up and resumes, :func:`offline_phase` and
:func:`~qam_lite.training.online.online_phase` are the loops (the bookkeeping both share:
:mod:`qam_lite.training.session`).

**Offline phase.** The dataset lives on the device; each compiled call runs ``n`` updates with
``lax.scan`` (batches sampled inside the call), vmapped over seeds. ``n`` divides every interval,
so evaluations, logs and checkpoints fall on exact steps.

**Sharded data** (a ``<domain>-100m-v0`` shard folder, see
:class:`qam_lite.data.datasets.ShardCycle`): as the authors' loader, training moves to the next
shard every ``datasets.SHARD_INTERVAL`` updates, cycling. One shard is on the device at a time,
swapped between compiled calls: ``n`` also divides the interval, and a call uses the shard of its
first update ``u``, ``(u // interval) % shards``. With ``n > 1`` shard ``k`` thus trains updates ``k
* interval + 1 .. (k + 1) * interval``, where the authors' loop switches one update earlier (``k *
interval .. (k + 1) * interval - 1``; with ``updates_per_call=1`` the two are the same). The shard
is a function of the step, so a resumed run reads the same shards. Shards of unequal size cost one
more compilation per size (results are unaffected). The run counts as cycled (paper-comparable data)
when its offline updates reach every shard. The online phase's replay buffer starts from the first
shard and does not cycle.

**Online phase** (``online_steps > 0``, as the authors' ``main.py``). Each seed has its own
environment; all seeds step in lockstep, one environment step each per loop iteration. A seed
asks its policy for an action chunk when its previous chunk is used up (or its episode ended)
and runs the ``H`` actions open loop. Every transition goes into that seed's replay buffer
(:mod:`qam_lite.data.replay`: the dataset followed by a ring of ``online_buffer_size`` online rows).
From environment step ``start_training`` on (the authors' ``i >= start_training``; 5,000 by
default), every environment step is followed by one update of every seed, on batches from its
own buffer. ``step`` counts offline updates plus environment steps.

**Interrupts.** The first Ctrl-C (SIGINT) or SIGTERM does not stop the program mid-step: the
running compiled call (offline) or environment step (online) is finished and logged, a
checkpoint is saved, and :func:`train` returns with ``summary['interrupted']``. A second one
stops at once (``KeyboardInterrupt``); nothing is saved then, and nothing needs to be.

**Resume.** Every random draw derives from ``(seed, step)`` (``fold_in``) and every environment
reset from ``(seed, episode)``, so the work after a checkpoint is the same whenever it is done.
The CSV rows of a step are written before that step's checkpoint, and a resumed run first cuts
the CSVs back to its checkpoint's step: after a kill at any moment (even mid-save: every write is
atomic) a rerun of the same command writes the same ``metrics.csv`` and ``eval.csv``, byte for
byte, as a run that never stopped. Online, a checkpoint also holds every seed's buffer, action
queue and the actions of its running episode; resuming replays those actions in a freshly reset
environment (MuJoCo is deterministic) and checks the observation it reaches.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from qam_lite.chunks import to_device
from qam_lite.config import Config
from qam_lite.data import datasets
from qam_lite.data.tasks import parse_task
from qam_lite.training import checkpoint as ckpt
from qam_lite.training import logs, rundir
from qam_lite.training.online import online_phase
from qam_lite.training.rundir import (
    CHECKPOINT,
)
from qam_lite.training.session import Context, Interrupts, call_size, nonfinite, to_sparse
from qam_lite.training.update import (
    init_states,
    make_multi_update,
    step_keys,
)

# --------------------------------------------------------------------------------------------
# The run's fixed parts and its bookkeeping


# --------------------------------------------------------------------------------------------
# Entry point


def train(
    config: Config,
    out_dir: str | Path,
    *,
    progress: bool = True,
    stop_after: int | None = None,
    data: tuple | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train ``config`` into ``out_dir`` (resuming its checkpoint if it has one); return a summary.

    Args:
      config: the run's :class:`~qam_lite.config.Config`.
      out_dir: run folder (created). A checkpoint of the same config there is resumed; a folder
        whose earlier attempt of the same config stopped before its first checkpoint starts
        over; results of another configuration (or dataset) raise :class:`RunMismatch`.
      progress: show a tqdm progress bar (in gradient/environment steps).
      stop_after: stop (as if interrupted) once ``step >= stop_after``: save a checkpoint and
        return with ``summary['interrupted'] = True`` (at the next call boundary offline, the
        next environment step online).
      data: optional ``(env, train)`` to use instead of loading the task's dataset.
      overwrite: discard the folder's run files first and start at step 0.

    Returns:
      dict with ``task, agent, step, seeds, success_rate`` (last evaluation, mean over seeds),
      ``success_per_seed``, ``seconds``, ``interrupted`` (``stopped_by``: ``'signal'`` or
      ``'stop_after'``) and ``out_dir``.

    Raises:
      TrainingDiverged: a NaN/inf loss (logs and the last good checkpoint are kept).
      RunMismatch: ``out_dir`` holds another configuration's or dataset's results.
      RunFolderError: ``out_dir`` is a file, not writable, or in use by another process.
      qam_lite.training.checkpoint.CheckpointError: the checkpoint is damaged.
      qam_lite.atomic.WriteError: a file could not be written (e.g. disk full); the previous
        checkpoint is intact.
      qam_lite.data.datasets.DataError: the dataset is missing or malformed.
    """
    if stop_after is not None and stop_after < 0:
        raise ValueError(f"stop_after={stop_after} is invalid; accepted: an integer >= 0")
    c = config
    out = Path(out_dir)
    with rundir.locked(out):
        meta = rundir.prepare(out, c, overwrite=overwrite)
        dataset, source, shards = load_data(c, data)
        fingerprint = rundir.data_fingerprint(dataset)
        if shards is not None:
            try:
                fingerprint = rundir.shards_fingerprint(fingerprint, shards.shards, shards.interval)
            except ValueError as err:
                raise datasets.DatasetError(str(err)) from err
        if meta is not None:
            rundir.check_data(out, meta, fingerprint, source)
            rundir.cut_back(out, int(meta["step"]))
        ctx = Context(
            c, out, parse_task(c.task), dataset, source, fingerprint, stop_after, Interrupts()
        )
        ctx.shards = shards
        prov = logs.provenance(
            task=ctx.task.name,
            agent=c.agent,
            seeds=[c.seed + i for i in range(c.num_seeds)],
            data=source,
            data_fingerprint=fingerprint,
            transitions=fingerprint["transitions"],
        )
        rundir.write_records(out, c, prov, meta)

        states = init_states(ctx.agent, c)
        step, phase, online_meta, extras = 0, "offline", None, {}
        if meta is not None:
            loaded, meta = ckpt.load(out / CHECKPOINT, {"states": states})
            states, step, phase = loaded["states"], int(meta["step"]), meta["phase"]
            ctx.elapsed_before, ctx.saved_step = float(meta.get("elapsed", 0.0)), step
            if meta.get("online"):
                online_meta, extras = meta["online"], ckpt.load_extras(out / CHECKPOINT)
            print(f"resuming {out} from step {step} ({phase})")
        if progress:
            from tqdm.auto import tqdm

            ctx.bar = tqdm(total=ctx.total_steps(), initial=step, unit="step", desc=c.agent)
        # From here on, Ctrl-C is deferred to the next step boundary (see Interrupts).
        try:
            with ctx.interrupts:
                stopped = False
                if phase == "offline":
                    states, step, stopped = offline_phase(ctx, states, step)
                    phase = "online" if c.online_steps else "done"
                if not stopped and phase == "online":
                    states, step, stopped = online_phase(ctx, states, step, online_meta, extras)
        finally:
            ctx.close()
        return _summarise(ctx, step, stopped)


def load_data(
    c: Config, data: tuple | None = None
) -> tuple[dict, dict, datasets.ShardCycle | None]:
    """``(train, source, shards)``: the dataset as training reads it (sparse rewards applied;
    with sharded data: the first shard), where it came from, and the shard schedule (``None``
    without shards). ``source`` names the file relative to the dataset folder (``file``), never
    this machine's absolute path: run folders are committed and compared across machines."""
    if data is not None:
        return _as_trained(c, data[1]), {"source": "given in memory"}, None
    folder = datasets.shard_folder(parse_task(c.task), datasets.data_dir(c.dataset_dir))
    if folder is None:
        _, train, _ = datasets.load(c.task, c.dataset_dir, download=c.download)
        try:
            source = datasets.provenance(c.task, c.dataset_dir)
        except datasets.DataError:
            source = {"source": "unknown"}
        source["file"] = datasets.dataset_paths(c.task, c.dataset_dir)[0].name
        return _as_trained(c, train), source, None
    # Read the module's constant now (not ShardCycle's default, bound at import).
    shards = datasets.ShardCycle(c.task, folder, interval=datasets.SHARD_INTERVAL)
    train, _ = shards.data(1)
    # Shards the offline phase reaches: 0 .. that of the last call's first update (see above).
    count, last = len(shards.shards), c.offline_steps - call_size(c, shards.interval) + 1
    used = min(count, last // shards.interval + 1) if c.offline_steps else 1
    source = datasets.provenance(c.task, c.dataset_dir, shards_cycled=used == count)
    source.update(file=folder.name, shard_interval=shards.interval, shards_used=used)
    if used < count and not source["paper_comparable"]:
        source["paper_comparable_reason"] = (
            f"{c.offline_steps} offline updates reach {used} of the {count} shards "
            f"({shards.interval} updates each); the paper cycles through all of them"
        )
    print(
        f"data: {folder} ({len(shards.shards)} shards, the next one every {shards.interval} "
        f"updates, cycling; {len(train['rewards'])} transitions in the first)"
    )
    return _as_trained(c, train), source, shards


def _as_trained(c: Config, train: dict) -> dict:
    """``train`` as training reads it: sparse rewards where the config asks for them."""
    train = dict(train)
    if c.sparse_reward:
        train["rewards"] = to_sparse(train["rewards"])
    return train


# --------------------------------------------------------------------------------------------
# Offline phase


def offline_phase(ctx: Context, states, step: int):
    """Offline updates from ``step`` to ``offline_steps``; returns ``(states, step, stopped)``."""
    c = ctx.config
    shards = ctx.shards
    n = call_size(c, shards.interval if shards is not None else None)
    data = to_device(ctx.dataset) if shards is None else None
    shard = None  # index of the shard now on the device
    multi = make_multi_update(ctx.agent, c, n, seeds=True)
    phase_after = "online" if c.online_steps else "done"
    while step < c.offline_steps:
        if ctx.should_stop(step):
            if ctx.saved_step != step:
                ctx.save(states, step, "offline")
            return states, step, True
        # Sharded data: this call's updates step+1..step+n all use the shard of update step+1.
        if shards is not None and shards.index(step + 1) != shard:
            shard, data = shards.index(step + 1), None  # free the device copy before the next
            data = to_device(_as_trained(c, shards.data(step + 1)[0]))
        states, metrics = multi(states, data, step_keys(ctx.bases, 1, step), None)
        step += n
        metrics = jax.device_get(metrics)
        # A step's rows are written before its checkpoint: resuming cuts them back to it.
        last = step == c.offline_steps
        if step % c.log_interval == 0 or last or nonfinite(metrics):
            ctx.log_metrics(step, "offline", metrics, states)
        if step % c.eval_interval == 0 or last:
            ctx.evaluate(states, step, "offline")
        if step % c.checkpoint_interval == 0 or last:
            ctx.save(states, step, phase_after if last else "offline")
        if ctx.bar is not None:
            ctx.bar.update(n)
    return states, step, False


# --------------------------------------------------------------------------------------------
# Online phase


# --------------------------------------------------------------------------------------------
# Summary


def _summarise(ctx: Context, step: int, stopped: bool) -> dict[str, Any]:
    c = ctx.config
    rows = logs.read_rows(ctx.out / "eval.csv")
    last = max((int(r["step"]) for r in rows), default=None)
    per_seed = [float(r["success_rate"]) for r in rows if int(r["step"]) == last]
    seconds = ctx.elapsed_before + time.perf_counter() - ctx.started
    summary = {
        "task": ctx.task.name,
        "agent": c.agent,
        "step": int(step),
        "total_steps": ctx.total_steps(),
        "seeds": c.num_seeds,
        "eval_step": last,
        "success_rate": float(np.mean(per_seed)) if per_seed else None,
        "success_per_seed": per_seed,
        "eval_episodes": c.eval_episodes,
        "seconds": round(seconds, 1),
        "interrupted": stopped,
        "stopped_by": ctx.stopped_by if stopped else None,
        "out_dir": str(ctx.out),
        "data": ctx.source,
    }
    logs.write_json(ctx.out / "summary.json", summary)
    return summary


def summary_line(summary: dict[str, Any]) -> str:
    """The one-line result a CLI run ends with."""
    s = summary
    rate = "n/a" if s["success_rate"] is None else f"{100 * s['success_rate']:.1f}%"
    state = "stopped early, resume with the same command" if s["interrupted"] else "done"
    return (
        f"{s['agent']} on {s['task']}: success {rate} (mean of {s['seeds']} seed(s) x "
        f"{s['eval_episodes']} episodes at step {s['eval_step']}); {s['step']}/{s['total_steps']} "
        f"steps in {s['seconds']:.0f} s ({state}) -> {s['out_dir']}"
    )
