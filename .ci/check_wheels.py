"""Every dependency of qam-lite resolves to wheels for a Python version (default Colab's, 3.13).

    python .ci/check_wheels.py [3.13]

Resolves pyproject's dependencies and the ``book`` and ``test`` extras with pip's resolver for
that interpreter (``--python-version``, markers evaluated for it) accepting wheels only, so a
package that would have to be built from source there (as labmaze, which dm_control requires,
would on 3.13) fails here instead of in a user's Colab. The two packages the 3.13 install adds
without dependencies (``ogbench``, ``dm_control``) must have wheels too. Needs the package index.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NO_DEPS = ["ogbench>=1.2", "dm_control>=1.0.20"]  # README "Python 3.13"; the chapters' Colab cell


def requirements(python_version: str) -> list[str]:
    """pyproject's requirements that apply on ``python_version``, markers evaluated for it
    (pip evaluates a command line's markers for the interpreter running it, whatever
    ``--python-version`` says)."""
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in ("book", "test"):
        reqs += [r for r in project["optional-dependencies"][extra] if not r.startswith("qam-lite")]
    env = {"python_version": python_version, "python_full_version": f"{python_version}.0"}
    out = []
    for text in reqs:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate(env):
            req.marker = None
            out.append(str(req))
    return out


def pip(*args: str, python_version: str) -> None:
    with tempfile.TemporaryDirectory() as target:
        cmd = [sys.executable, "-m", "pip", "-q", *args, "--python-version", python_version]
        cmd += ["--only-binary=:all:", "--dest" if args[0] == "download" else "--target", target]
        subprocess.run(cmd, check=True)


def main(python_version: str = "3.13") -> int:
    reqs = requirements(python_version)
    try:
        pip("install", "--dry-run", "--ignore-installed", *reqs, python_version=python_version)
        if tuple(map(int, python_version.split("."))) >= (3, 13):
            pip("download", "--no-deps", *NO_DEPS, python_version=python_version)
    except subprocess.CalledProcessError:
        print(f"ci: some dependency has no Python {python_version} wheel (pip said why above)")
        return 1
    print(f"ci: all {len(reqs)} requirements resolve to Python {python_version} wheels")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
