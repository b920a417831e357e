"""Task names: parsing, short forms, the domain table, and errors that name the fix."""

import gymnasium
import ogbench  # noqa: F401  (registers the OGBench environments)
import pytest

from qam_lite.tasks import DOMAINS, PAPER_DOMAINS, TaskError, all_task_names, parse_task


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
