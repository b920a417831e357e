"""Every agent's loss and gradient equal a plain transcription of the published formulas.

The references below are written from the authors' agents (``ColinQiyangLi/qam``: ``agents/qam.py``
with ``fql_alpha`` / ``edit_scale`` for QAM-F / QAM-E, ``agents/fql.py``, ``agents/bam.py``) in
their style: Python loops over the flow steps, and two copies of the parameters: ``grad_params``,
the argument that is differentiated (the authors' ``params=grad_params``), and ``fixed``, the
current parameters used where the authors call a network without ``params=`` (held fixed). So
the gradients check *which* network receives *which* term, not only the loss values.

Both sides see the same tiny networks, the same batch and the same noise: the references draw it
from the library's documented key schedule (the ``Keys:`` lines of the agents' docstrings).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qam_lite.agents import bam as bam_module
from qam_lite.agents import fql as fql_module
from qam_lite.agents import qam as qam_module
from qam_lite.agents import qam_e as qam_e_module
from qam_lite.agents import qam_f as qam_f_module
from qam_lite.training.settings import make_config

OBS, ACT, H, B, T = 3, 2, 2, 6, 3
D = H * ACT
# antmaze-large: every agent's per-domain switch is on (QAM-E edit 0.1, QAM-F alpha 30).
TASK = "antmaze-large-navigate-singletask-task1-v0"
TINY = dict(
    horizon=H, actor_hidden=(8, 8), critic_hidden=(8, 8), num_critics=3, flow_steps=T, batch_size=B
)


def config(agent, **overrides):
    return make_config(TASK, agent, **{**TINY, **overrides})


def make_batch(key):
    ks = jax.random.split(key, 5)
    valid = jnp.ones((B, H)).at[1, 1:].set(0.0)  # sample 1 crosses an episode end
    return {
        "observations": jax.random.normal(ks[0], (B, OBS)),
        "next_observations": jax.random.normal(ks[1], (B, OBS)),
        "actions": jax.random.uniform(ks[2], (B, D), minval=-0.99, maxval=0.99),
        "rewards": jax.random.normal(ks[3], (B,)),
        "masks": jnp.array([1.0, 0.0, 1.0, 1.0, 1.0, 0.0]),
        "valid": valid,
    }


def perturb(tree, key, scale=0.3):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        treedef,
        [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)],
    )


# ---- the published formulas, transcribed ----


def ref_flow(vf, params, obs, x0, steps):
    """``compute_flow_actions``: Euler steps of ``vf`` from ``x0``, then clip."""
    x = x0
    for i in range(steps):
        t = jnp.full((*obs.shape[:-1], 1), i / steps)
        x = x + vf(params, obs, x, t) / steps
    return jnp.clip(x, -1, 1)


def ref_bc(vf, grad_params, batch, x0, t):
    """BC flow loss: squared error averaged over dimensions, weighted by ``valid[..., -1]``."""
    x1 = batch["actions"]
    pred = vf(grad_params, batch["observations"], (1 - t) * x0 + t * x1, t)
    return jnp.mean(jnp.square(pred - (x1 - x0)).mean(axis=-1) * batch["valid"][..., -1])


def ref_critic(qf, grad_params, target_params, batch, next_actions, c):
    next_qs = qf(target_params, batch["next_observations"], next_actions)
    next_q = next_qs.mean(axis=0) - c.rho * next_qs.std(axis=0)
    target_q = batch["rewards"] + c.gamma**c.horizon * batch["masks"] * next_q
    q = qf(grad_params, batch["observations"], batch["actions"])
    return (jnp.square(q - target_q) * batch["valid"][..., -1]).mean()


def ref_adjoint_matching(
    vf, qf, grad_actor, fixed_actor, target_bc, target_critic, obs, x0, noise, c
):
    """``adj_matching`` + the adjoint-matching part of ``actor_loss`` (non-residual)."""
    steps, h = c.flow_steps, 1 / c.flow_steps
    x, xs, ts = x0, [x0], []
    for i in range(steps):
        t = i / steps * jnp.ones_like(x[..., :1])
        sigma = jnp.sqrt(2 * (1 - t + h) / (t + h))
        if i != steps - 1:
            v = vf(fixed_actor, obs, x, t)
            x = x + h * (2 * v - x / (t + h)) + jnp.sqrt(h) * sigma * noise[i]
        else:
            x = x + h * vf(target_bc, obs, x, t)
        xs.append(x)
        ts.append(t)
    grad_fn = jax.grad(lambda y: qf(target_critic, obs, jnp.clip(y, -1.0, 1.0)).mean(axis=0).sum())
    adj = -grad_fn(xs[-1]) * c.tau
    adjs = []
    for i in reversed(range(steps)):
        t = (i / steps) * jnp.ones_like(x[..., :1])

        def drift(xi, t=t):
            return 2 * vf(target_bc, obs, xi, t + h) - xi / (t + h)

        adj = adj + h * jax.vjp(drift, xs[i])[1](adj)[0]
        adjs.append(adj)
    xs, adjs, ts = jnp.stack(xs[:-1]), jnp.stack(adjs[::-1]), jnp.stack(ts)
    sigmas = jnp.sqrt(2 * (1 - ts + h) / (ts + h))
    fine, base = vf(grad_actor, obs, xs, ts), vf(target_bc, obs, xs, ts)
    loss = jnp.sum(jnp.square((fine - base) * 2 / sigmas + sigmas * adjs), axis=-1)
    return jnp.mean(jnp.sum(loss, axis=0))


def ref_bam(vf, qf, grad_actor, target_bc, fixed_critic, obs, x0, noise, c):
    """``compute_sde`` (back-propagated) and BAM's part of ``actor_loss`` (non-residual)."""
    steps, h = c.flow_steps, 1 / c.flow_steps
    x, penalty = x0, 0.0
    for i in range(steps):
        t = i / steps * jnp.ones_like(x[..., :1])
        sigma = jnp.sqrt(2 * (1 - t + h) / (t + h))
        if i != steps - 1:
            v = vf(grad_actor, obs, x, t)
            v_slow = vf(target_bc, obs, x, t)
            penalty = penalty + jnp.square(v - v_slow).sum(axis=-1) * 2 / sigma[..., 0] ** 2
            x = x + h * (2 * v - x / (t + h)) + jnp.sqrt(h) * sigma * noise[i]
        else:
            x = x + h * vf(target_bc, obs, x, t)
    qs = qf(fixed_critic, obs, x)
    q = (qs.mean(axis=0) - c.rho * qs.std(axis=0)).mean()
    return -q * c.tau + jnp.mean(penalty)


def ref_one_step_q(qf, fixed_critic, mu, grad_mu, obs, z, teacher_actions, alpha):
    """FQL's distillation + Q term (``actor_onestep_flow`` / ``one_step_actor``)."""
    actions = mu(grad_mu, jnp.concatenate([obs, z], axis=-1))
    distill = jnp.mean((actions - teacher_actions) ** 2)
    q = jnp.mean(qf(fixed_critic, obs, jnp.clip(actions, -1, 1)), axis=0)
    return -q.mean() + alpha * distill


def ref_edit(edit, temp, qf, grad_edit, fixed_temp, grad_temp, fixed_critic, obs, flow, eps, c):
    """QAM's ``edit_scale > 0`` branch: tanh-Gaussian edit, SAC entropy, learned temperature."""
    mean, log_std = edit(grad_edit, jnp.concatenate([obs, flow], axis=-1))
    u = mean + jnp.exp(log_std) * eps  # the pre-tanh sample
    gauss = jnp.sum(
        -0.5 * ((u - mean) / jnp.exp(log_std)) ** 2 - log_std - 0.5 * np.log(2 * np.pi), -1
    )
    log_probs = gauss - jnp.sum(jnp.log(1 - jnp.tanh(u) ** 2), axis=-1)
    edited = jnp.clip(flow + jnp.tanh(u) * c.edit_scale, -1, 1)
    q_loss = -jnp.mean(qf(fixed_critic, obs, edited), axis=0).mean()
    entropy_loss = (log_probs * temp(fixed_temp)).mean()
    entropy = -jax.lax.stop_gradient(log_probs).mean()
    alpha_loss = temp(grad_temp) * (entropy - (-0.5 * flow.shape[-1]))
    return q_loss + entropy_loss + alpha_loss


def ref_edit_act(edit, vf, fixed, obs, x0, eps, c):
    flow = ref_flow(vf, fixed["actor"], obs, x0, c.flow_steps)
    mean, log_std = edit(fixed["edit"], jnp.concatenate([obs, flow], axis=-1))
    return jnp.clip(flow + jnp.tanh(mean + jnp.exp(log_std) * eps) * c.edit_scale, -1, 1)


# ---- the library's noise, drawn from its documented key schedule ----


def normal(key, *shape):
    return jax.random.normal(key, shape)


def bc_noise(key):
    k0, kt = jax.random.split(key)
    return normal(k0, B, D), jax.random.uniform(kt, (B, 1))


def sde_noise(key):
    k_x0, k_sde = jax.random.split(key)
    return normal(k_x0, B, D), normal(k_sde, T - 1, B, D)


# ---- the comparison ----


def states(networks, key, targets=("critic", "bc_flow")):
    params = networks.init(key)
    k1, k2 = jax.random.split(jax.random.fold_in(key, 1))
    moved = {"critic": perturb(params["critic"], k1), "bc_flow": perturb(params["bc_flow"], k2)}
    return params, {name: moved[name] for name in targets}


def assert_same(got, want, rtol=2e-5, atol=1e-6):
    (g_loss, g_grads), (w_loss, w_grads) = got, want
    assert float(g_loss) == pytest.approx(float(w_loss), rel=rtol, abs=atol)
    assert jax.tree.structure(g_grads) == jax.tree.structure(w_grads)
    got_leaves = jax.tree_util.tree_leaves_with_path(g_grads)
    for (path, g), w in zip(got_leaves, jax.tree.leaves(w_grads), strict=True):
        scale = max(1.0, float(jnp.max(jnp.abs(w))))
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * scale, err_msg=str(path))


def library(loss_fn, params, targets, batch, key):
    return jax.value_and_grad(lambda p: loss_fn(p, targets, batch, key)[0])(params)


def published(ref, params):
    """``value_and_grad`` in ``grad_params``; ``fixed``: the same values, not differentiated."""
    fixed = jax.lax.stop_gradient(params)
    return jax.value_and_grad(lambda grad_params: ref(grad_params, fixed))(params)


@pytest.mark.parametrize("agent", ["qam", "bam", "qam-e", "qam-f"])
def test_qam_family_loss_and_gradients_match_the_published_code(agent):
    c = config(agent)
    head = {"qam-e": qam_e_module.edit_head, "qam-f": qam_f_module.one_step_head}.get(agent)
    head = None if head is None else head(c, OBS, D)
    actor_terms = bam_module.bptt_terms if agent == "bam" else qam_module.adjoint_terms
    networks = qam_module.make_networks(c, OBS, D, None if head is None else head.builders)
    loss_fn = qam_module.make_loss(c, networks, D, actor_terms, head)
    params, targets = states(networks, jax.random.key(0))
    batch, key = make_batch(jax.random.key(1)), jax.random.key(2)
    vf, qf = networks.apply["actor"], networks.apply["critic"]
    obs = batch["observations"]

    k_bc, k_next, k_actor, k_head = jax.random.split(key, 4)
    x0_bc, t_bc = bc_noise(k_bc)
    x0_sde, noise_sde = sde_noise(k_actor)

    def ref(grad_params, fixed):
        bc = ref_bc(vf, grad_params["bc_flow"], batch, x0_bc, t_bc)
        next_obs = batch["next_observations"]
        if agent == "qam-f":
            z_next = normal(k_next, B, D)
            mu = networks.apply["one_step"]
            next_actions = jnp.clip(
                mu(fixed["one_step"], jnp.concatenate([next_obs, z_next], -1)), -1, 1
            )
        elif agent == "qam-e":
            k_flow, k_edit = jax.random.split(k_next)
            next_actions = ref_edit_act(
                networks.apply["edit"],
                vf,
                fixed,
                next_obs,
                normal(k_flow, B, D),
                normal(k_edit, B, D),
                c,
            )
        else:
            next_actions = ref_flow(vf, fixed["actor"], next_obs, normal(k_next, B, D), T)
        critic = ref_critic(qf, grad_params["critic"], targets["critic"], batch, next_actions, c)
        if agent == "bam":
            actor = ref_bam(
                vf,
                qf,
                grad_params["actor"],
                targets["bc_flow"],
                fixed["critic"],
                obs,
                x0_sde,
                noise_sde,
                c,
            )
        else:
            actor = ref_adjoint_matching(
                vf,
                qf,
                grad_params["actor"],
                fixed["actor"],
                targets["bc_flow"],
                targets["critic"],
                obs,
                x0_sde,
                noise_sde,
                c,
            )
        total = critic + bc + actor
        if agent == "qam-f":
            z = normal(k_head, B, D)
            teacher = ref_flow(vf, fixed["actor"], obs, z, T)
            total += ref_one_step_q(
                qf,
                fixed["critic"],
                networks.apply["one_step"],
                grad_params["one_step"],
                obs,
                z,
                teacher,
                c.alpha,
            )
        if agent == "qam-e":
            k_flow, k_edit = jax.random.split(k_head)
            flow = ref_flow(vf, fixed["actor"], obs, normal(k_flow, B, D), T)
            total += ref_edit(
                networks.apply["edit"],
                networks.apply["edit_temp"],
                qf,
                grad_params["edit"],
                fixed["edit_temp"],
                grad_params["edit_temp"],
                fixed["critic"],
                obs,
                flow,
                normal(k_edit, B, D),
                c,
            )
        return total

    assert_same(library(loss_fn, params, targets, batch, key), published(ref, params))


def test_fql_loss_and_gradients_match_the_published_code():
    c = config("fql")
    assert c.grad_clip is None and not c.normalize_q_loss  # plain Adam, no Q normalisation
    networks = fql_module.make_networks(c, OBS, D)
    loss_fn = fql_module.make_loss(c, networks, D)
    params, targets = states(networks, jax.random.key(0), targets=("critic",))
    batch, key = make_batch(jax.random.key(1)), jax.random.key(2)
    vf, qf, mu = networks.apply["bc_flow"], networks.apply["critic"], networks.apply["actor"]
    k_bc, k_next, k_z = jax.random.split(key, 3)
    x0_bc, t_bc = bc_noise(k_bc)
    obs, next_obs = batch["observations"], batch["next_observations"]

    def ref(grad_params, fixed):
        z_next = normal(k_next, B, D)
        next_actions = jnp.clip(mu(fixed["actor"], jnp.concatenate([next_obs, z_next], -1)), -1, 1)
        critic = ref_critic(qf, grad_params["critic"], targets["critic"], batch, next_actions, c)
        bc = ref_bc(vf, grad_params["bc_flow"], batch, x0_bc, t_bc)
        z = normal(k_z, B, D)
        teacher = ref_flow(vf, fixed["bc_flow"], obs, z, T)  # the BC flow's clipped actions
        actor = ref_one_step_q(
            qf, fixed["critic"], mu, grad_params["actor"], obs, z, teacher, c.alpha
        )
        return critic + bc + actor

    assert_same(library(loss_fn, params, targets, batch, key), published(ref, params))


def test_bam_path_kl_option_scales_the_penalty_by_the_step():
    c = config("bam", tau=0.0)
    networks = qam_module.make_networks(c, OBS, D)
    params, targets = states(networks, jax.random.key(0))
    obs, key = make_batch(jax.random.key(1))["observations"], jax.random.key(3)
    published_loss = bam_module.bptt_terms(networks, params, targets, obs, key, c, D)[0]
    path_kl = bam_module.bptt_terms(
        networks, params, targets, obs, key, c.replace(bam_path_kl=True), D
    )[0]
    assert float(published_loss) > 1e-3
    assert float(path_kl) == pytest.approx(float(published_loss) / T, rel=1e-5)


def test_fql_normalised_q_term_is_the_named_option():
    def qf(p, obs, a):
        return jnp.stack([jnp.sum(a, -1) + p, 2 * jnp.sum(a, -1) + p])

    def mu(p, x):
        return x[..., OBS:] * p

    obs, z = jnp.ones((B, OBS)), 0.1 * jnp.arange(B * D, dtype=jnp.float32).reshape(B, D) / (B * D)
    teacher = jnp.zeros((B, D))
    plain, m = fql_module.distill_terms(mu, 2.0, qf, 3.0, obs, teacher, z, alpha=0.0)
    scaled, m2 = fql_module.distill_terms(
        mu, 2.0, qf, 3.0, obs, teacher, z, alpha=0.0, normalize=True
    )
    q = np.mean([np.sum(np.clip(2.0 * np.asarray(z), -1, 1), -1) * k + 3.0 for k in (1, 2)], axis=0)
    assert float(plain) == pytest.approx(-q.mean(), rel=1e-5)
    assert float(scaled) == pytest.approx(-q.mean() / np.abs(q).mean(), rel=1e-5)
