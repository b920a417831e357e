"""Task names: parsing, short forms, the domain table, and errors that name the fix."""

import gymnasium
import ogbench  # noqa: F401  (registers the OGBench environments)
import pytest

from qam_lite.data.tasks import DOMAINS, PAPER_DOMAINS, TaskError, all_task_names, parse_task


def test_canonical_name():
    t = parse_task("cube-double-play-singletask-task2-v0")
    assert t.name == "cube-double-play-singletask-task2-v0"
    assert (t.domain, t.dataset, t.task_id) == ("cube-double-play", "cube-double-play-v0", 2)
    assert t.reward == "dense" and t.locally_generable
    assert t.env_name == "cube-double-singletask-task2-v0"


@pytest.mark.parametrize(
    "short",
    [
        "cube-double-task2",
        "cube-double-play-task2",
        "Cube-Double-Play-Task2-v0",
        " cube-double-task2 ",
    ],
)
def test_short_forms(short):
    assert parse_task(short).name == "cube-double-play-singletask-task2-v0"


@pytest.mark.parametrize(
    "name", ["cube-double-play-singletask-v0", "cube-double", "cube-double-play"]
)
def test_default_task(name):
    t = parse_task(name)
    assert t.task_id is None and t.name == "cube-double-play-singletask-v0"
    assert t.env_name == "cube-double-singletask-v0"


def test_reward_types_follow_design():
    sparse = {d for d, info in DOMAINS.items() if info.reward == "sparse"}
    assert sparse == {"scene-play", "puzzle-3x3-play", "puzzle-4x4-play"}
    assert parse_task("puzzle-3x3-task1").reward == "sparse"
    assert not parse_task("antmaze-large-navigate-task1").locally_generable
    assert parse_task("pointmaze-medium-navigate-singletask-task3-v0").locally_generable


def test_paper_domains():
    assert len(PAPER_DOMAINS) == 10
    assert "cube-single-play" not in PAPER_DOMAINS and "cube-quadruple-play" in PAPER_DOMAINS


def test_every_name_is_a_registered_ogbench_env():
    for name in all_task_names() + [parse_task(d).name for d in DOMAINS]:
        assert parse_task(name).env_name in gymnasium.envs.registry, name


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ("cube-dubble-play-singletask-task2-v0", "cube-double-play-singletask-task2-v0"),
        ("cube-double-task9", "tasks 1..5"),
        ("halfcheetah-medium", "domains: "),
        ("", "non-empty"),
    ],
)
def test_errors_name_the_fix(bad, fragment):
    with pytest.raises(TaskError, match=fragment):
        parse_task(bad)
    assert issubclass(TaskError, ValueError)


def test_known_widths_are_the_environments():
    """``DOMAINS`` widths (used to check datasets without building an env) match OGBench's."""
    import warnings

    for domain, info in DOMAINS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            env = gymnasium.make(parse_task(domain).env_name)
        assert env.observation_space.shape == (info.obs_dim,), domain
        assert env.action_space.shape == (info.act_dim,), domain
        env.close()


def test_published_dataset_sizes():
    """OGBench's data_gen_scripts/commands.sh sizes; the paper's 100M domains are marked."""
    sizes = {d: (i.episodes, i.episode_length) for d, i in DOMAINS.items()}
    assert sizes["pointmaze-giant-navigate"] == (500, 2001)
    assert sizes["antmaze-giant-navigate"] == (500, 2001)
    assert sizes["humanoidmaze-medium-navigate"] == (1000, 2001)
    assert sizes["cube-triple-play"] == (3000, 1001) and sizes["scene-play"] == (1000, 1001)
    big = {d: i.paper_data for d, i in DOMAINS.items() if i.paper_data}
    assert big == {
        "cube-quadruple-play": "cube-quadruple-play-100m-v0",
        "puzzle-4x4-play": "puzzle-4x4-play-100m-v0",
    }
