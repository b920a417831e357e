"""Config: the paper's per-domain table, overrides, validation messages, parsing, round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qam_lite.config import AGENTS, Config, ConfigError, from_dict, parse_overrides, to_dict
from qam_lite.data.tasks import parse_task
from qam_lite.training.settings import DOMAINS, make_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        # (H, gamma, rho, tau, alpha, sparse) straight from DESIGN.md's table.
        ("antmaze-large-navigate-singletask-task1-v0", (1, 0.99, 0.5, 10, 3, False)),
        ("antmaze-giant-navigate-singletask-task5-v0", (1, 0.995, 0.5, 3, 3, False)),
        ("humanoidmaze-medium-navigate-singletask-task2-v0", (1, 0.995, 0.0, 3, 30, False)),
        ("cube-double-play-singletask-task2-v0", (5, 0.99, 0.5, 1, 300, False)),
        ("cube-triple-play-singletask-task3-v0", (5, 0.99, 0.5, 3, 30, False)),
        ("scene-play-singletask-task1-v0", (5, 0.99, 0.5, 1, 300, True)),
        ("puzzle-4x4-play-singletask-task4-v0", (5, 0.99, 0.5, 30, 1, True)),
        ("puzzle-3x3", (5, 0.99, 0.5, 3, 300, True)),  # short form
    ],
)
def test_domain_defaults_follow_the_paper_table(task, expected):
    c = make_config(task)
    assert (c.horizon, c.gamma, c.rho, c.tau, c.alpha, c.sparse_reward) == expected
    assert c.task.endswith("-v0") and "singletask" in c.task  # canonical name stored


# Straight from the authors' experiments/reproduce.py (QAM, FQL, BAM, QAM_EDIT, QAM_FQL entries).
REPRODUCE = {
    #                      QAM   FQL    BAM   QAM_EDIT     QAM_FQL
    #                      tau   alpha  tau   tau  edit    tau  alpha
    "puzzle-3x3-play": (3.0, 300.0, 10.0, 1.0, 0.1, 3.0, 0.0),
    "scene-play": (1.0, 300.0, 10.0, 1.0, 0.0, 1.0, 300.0),
    "cube-double-play": (1.0, 300.0, 10.0, 1.0, 0.0, 1.0, 0.0),
    "antmaze-large-navigate": (10.0, 3.0, 30.0, 1.0, 0.1, 3.0, 30.0),
    "humanoidmaze-medium-navigate": (3.0, 30.0, 10.0, 3.0, 0.1, 1.0, 30.0),
    "cube-triple-play": (3.0, 30.0, 30.0, 3.0, 0.1, 10.0, 300.0),
    "cube-quadruple-play": (1.0, 100.0, 10.0, 3.0, 0.1, 0.3, 30.0),
    "puzzle-4x4-play": (30.0, 1.0, 30.0, 0.1, 0.9, 3.0, 3.0),
    "antmaze-giant-navigate": (3.0, 3.0, 30.0, 10.0, 0.1, 3.0, 30.0),
    "humanoidmaze-large-navigate": (3.0, 30.0, 30.0, 3.0, 0.1, 0.3, 30.0),
}


@pytest.mark.parametrize("domain", sorted(REPRODUCE))
def test_each_agent_gets_its_own_published_per_domain_values(domain):
    qam_tau, fql_alpha, bam_tau, e_tau, e_scale, f_tau, f_alpha = REPRODUCE[domain]
    get = {agent: make_config(domain, agent) for agent in AGENTS}
    assert get["qam"].tau == qam_tau
    assert get["fql"].alpha == fql_alpha
    assert get["bam"].tau == bam_tau
    assert (get["qam-e"].tau, get["qam-e"].edit_scale) == (e_tau, e_scale)
    assert (get["qam-f"].tau, get["qam-f"].alpha) == (f_tau, f_alpha)
    for c in get.values():  # shared per-domain settings, whatever the agent
        assert (c.horizon, c.gamma, c.rho) == (get["qam"].horizon, get["qam"].gamma, get["qam"].rho)
        assert c.grad_clip == (None if c.agent == "fql" else 1.0)  # published FQL: plain Adam
        assert not c.normalize_q_loss and not c.bam_path_kl  # departures are off by default
        assert isinstance(c.tau, float) and isinstance(c.alpha, float)


def test_every_paper_domain_has_settings_and_shared_defaults():
    assert len(DOMAINS) == 10
    c = make_config("cube-quadruple-play-singletask-task1-v0", agent="fql")
    assert (c.num_critics, c.flow_steps, c.batch_size, c.lr, c.grad_clip, c.polyak) == (
        10,
        10,
        256,
        3e-4,
        None,  # FQL: plain Adam
        0.005,
    )
    assert c.actor_hidden == c.critic_hidden == (512, 512, 512, 512)
    assert c.agent == "fql" and parse_task(c.task).domain == "cube-quadruple-play"


def test_overrides_win_over_domain_defaults():
    c = make_config("scene-play-singletask-task2-v0", tau=7.5, horizon=2, sparse_reward=False)
    assert (c.tau, c.horizon, c.sparse_reward, c.gamma) == (7.5, 2, False, 0.99)
    assert c.replace(seed=3).seed == 3


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"tau": -1.0}, ["tau=-1.0", ">= 0"]),
        ({"gamma": 1.0}, ["gamma=1.0", "(0, 1)"]),
        ({"batch_size": 0}, ["batch_size=0", ">= 1"]),
        ({"actor_hidden": ()}, ["actor_hidden", "non-empty tuple"]),
        ({"polyak": 0.0}, ["polyak", "(0, 1]"]),
        ({"sparse_reward": "yes"}, ["sparse_reward", "true or false"]),
        ({"num_critics": 1}, ["num_critics=1", "rho"]),
        ({"edit_scale": -0.1}, ["edit_scale=-0.1", ">= 0"]),
        ({"grad_clip": 0.0}, ["grad_clip=0.0", "none"]),
        ({"bam_path_kl": 1}, ["bam_path_kl", "true or false"]),
    ],
)
def test_validation_names_field_value_and_accepted_range(overrides, words):
    with pytest.raises(ConfigError) as err:
        make_config("cube-double-play-singletask-task1-v0", **overrides)
    for word in words:
        assert word in str(err.value)


def test_unknown_names_get_a_close_match():
    with pytest.raises(ConfigError, match="did you mean 'qam'"):
        make_config("cube-double-play", agent="qma")
    with pytest.raises(ConfigError, match="did you mean 'flow_steps'"):
        make_config("cube-double-play", flow_step=4)
    with pytest.raises(ConfigError, match="unknown task"):
        make_config("cube-dubble-play-singletask-task1-v0")
    make_config("cube-double-play", agent="bc", num_critics=1, rho=0.0)  # rho=0 allows K=1


def test_parse_overrides_types_from_the_dataclass():
    got = parse_overrides(
        [
            "tau=3",
            "actor_hidden=256,256",
            "sparse_reward=true",
            "offline_steps=1_000",
            "dataset_dir=none",
            "task=scene-play",
            "download=0",
            "lr=1e-3",
            "grad_clip=none",
            "edit_scale=0.2",
        ]
    )
    assert got == {
        "tau": 3.0,
        "actor_hidden": (256, 256),
        "sparse_reward": True,
        "offline_steps": 1000,
        "dataset_dir": None,
        "task": "scene-play",
        "download": False,
        "lr": 1e-3,
        "grad_clip": None,
        "edit_scale": 0.2,
    }
    assert parse_overrides(["grad_clip=2"]) == {"grad_clip": 2.0}
    assert isinstance(got["tau"], float) and isinstance(got["offline_steps"], int)
    with pytest.raises(ConfigError, match="did you mean 'horizon'"):
        parse_overrides(["horizn=2"])
    with pytest.raises(ConfigError, match="sparse_reward='maybe'.*true/false"):
        parse_overrides(["sparse_reward=maybe"])
    with pytest.raises(ConfigError, match="grad_clip='x'.*a number or none"):
        parse_overrides(["grad_clip=x"])
    with pytest.raises(ConfigError, match="batch_size='big'.*integer"):
        parse_overrides(["batch_size=big"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["tau"])


def test_to_dict_from_dict_round_trip_through_json():
    c = make_config("puzzle-3x3-play-singletask-task4-v0", agent="fql", actor_hidden=(64, 32))
    d = json.loads(json.dumps(to_dict(c)))
    assert d["actor_hidden"] == [64, 32]
    assert from_dict(d) == c
    with pytest.raises(ConfigError, match="unknown hyperparameter"):
        from_dict({**d, "bogus": 1})
    assert Config() == from_dict(to_dict(Config()))


def test_resolve_is_domain_then_preset_then_overrides_then_the_callers_fields(tmp_path):
    from qam_lite.training.settings import PRESETS, resolve

    task = "scene-play-singletask-task1-v0"
    c = resolve(task, "fql", "cpu-small", ["alpha=10", "batch_size=64"], num_seeds=3)
    assert c.alpha == 10.0 and c.batch_size == 64 and c.num_seeds == 3  # overrides, fields
    assert c.actor_hidden == PRESETS["cpu-small"]["actor_hidden"]  # the preset
    assert c.gamma == 0.99 and c.sparse_reward is True  # the domain's published values
    assert resolve(task, "fql", None, {"alpha": 5.0}).alpha == 5.0  # typed overrides too
    assert resolve(task, dataset_dir=str(tmp_path / ".." / tmp_path.name)).dataset_dir == str(
        tmp_path.resolve()
    )
    with pytest.raises(ConfigError, match="preset='laptopp' is unknown; accepted: cpu-small"):
        resolve(task, "qam", "laptopp")
    with pytest.raises(ConfigError, match="task=.* cannot be overridden"):
        resolve(task, "qam", None, ["task=cube-double-play-singletask-task1-v0"])


def test_the_laptop_preset_is_the_committed_ladder_rung():
    # The preset names a measured budget: it must resolve to the configuration the committed
    # ladder runs were trained with (all but where they ran: seed and dataset folder).
    from qam_lite.training.settings import resolve

    rung = ROOT / "results" / "cpu-ladder" / "d1000-2x256-b256"
    for agent_dir in sorted(p for p in rung.iterdir() if (p / "config.json").is_file()):
        saved = from_dict(json.loads((agent_dir / "config.json").read_text()))
        preset = resolve(saved.task, saved.agent, "laptop", dataset_dir=saved.dataset_dir)
        assert preset == saved, agent_dir.name
