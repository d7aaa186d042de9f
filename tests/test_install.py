"""Install like a user: the built sdist and wheel ship the configs, and the wheel, installed in a
fresh virtual environment, runs the README's quickstart from a folder outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO
from unlearn_pl.benchmark import CONFIGS, available_method_configs

PACKAGE = REPO / "unlearn_pl"


def _package_files() -> list[str]:
    """The files of the source tree that must be in the wheel: every module and every config."""
    files = [p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts]
    files += [p for p in (PACKAGE / "configs").rglob("*") if p.is_file()]
    return sorted(p.relative_to(REPO).as_posix() for p in files)


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, (f"{command} failed ({result.returncode}):\n"
                                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sdist, wheel) as ``python -m build`` makes them: the sdist from a copy of the source
    (so no build/ or egg-info is written into the checkout), the wheel from the unpacked sdist,
    with the setuptools already installed (no registry needed)."""
    root = tmp_path_factory.mktemp("dists")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(PACKAGE, source / "unlearn_pl",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = root / "dist"
    _run([sys.executable, "-c", "import sys; from setuptools import build_meta as b; "
          "print(b.build_sdist(sys.argv[1]))", str(out)], cwd=source)
    (sdist,) = out.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        archive.extractall(root / "unpacked", filter="data")
    (unpacked,) = (root / "unpacked").iterdir()
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--no-cache-dir", "-w", str(out), str(unpacked)], cwd=root)
    (wheel,) = out.glob("*.whl")
    return sdist, wheel


def test_top_level_configs_is_the_packaged_copy() -> None:
    """One source of truth: configs/ is a symlink to the package's configs, which the code uses."""
    top = REPO / "configs"
    assert top.is_symlink() and os.readlink(top) == os.path.join("unlearn_pl", "configs")
    assert top.resolve() == (PACKAGE / "configs").resolve() == CONFIGS.resolve()


def test_sdist_and_wheel_ship_every_config(dists: tuple[Path, Path]) -> None:
    sdist, wheel = dists
    expected = _package_files()
    assert any(name.startswith("unlearn_pl/configs/data/") for name in expected)
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    assert [name for name in expected if name not in in_wheel] == []
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert [name for name in expected if name not in in_sdist] == []


@pytest.mark.slow
def test_wheel_runs_the_quickstart_in_a_fresh_venv(dists: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    """``pip install`` the wheel (and its dependencies) into a new venv, then run the README's
    main job, ``unlearn-pl-compare --setting digits``, from a folder outside the checkout."""
    _, wheel = dists
    venv, work = tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    assert not work.resolve().is_relative_to(REPO)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", PYTHONNOUSERSITE="1",
               VIRTUAL_ENV=str(venv))
    python = str(venv / "bin" / "python")
    timings = {}

    start = time.perf_counter()
    _run([sys.executable, "-m", "venv", str(venv)], cwd=work, env=env)
    install = _run([python, "-m", "pip", "install", str(wheel)], cwd=work, env=env, timeout=1200)
    timings["venv + pip install"] = time.perf_counter() - start
    # The CPU build of torch only: a CUDA build would pull nvidia-* wheels (GBs).
    assert "nvidia" not in install.stdout.lower(), install.stdout[-3000:]
    where = _run([python, "-c", "import torch, unlearn_pl, unlearn_pl.benchmark as c; "
                  "print(torch.version.cuda); print(unlearn_pl.__file__); "
                  "print(c.default_configs_dir())"], cwd=work, env=env).stdout.splitlines()
    cuda, module, configs = where[-3:]
    assert cuda == "None"
    assert Path(module).is_relative_to(venv), module  # the wheel, not the checkout
    assert Path(configs).is_relative_to(venv) and (Path(configs) / "data/digits.yaml").is_file()

    version = _run(["unlearn-pl", "--version"], cwd=work, env=env).stdout
    assert "unlearn_pl 0.2.0" in version

    start = time.perf_counter()
    quickstart = _run(["unlearn-pl-compare", "--setting", "digits"], cwd=work, env=env,
                      timeout=1200)
    timings["unlearn-pl-compare --setting digits"] = time.perf_counter() - start
    table = quickstart.stdout
    for method in ("original", "retrain", *available_method_configs()):
        assert f"| {method} |" in table, table
    for name in ("results.md", "results.csv", "results.json"):
        assert (work / "runs" / "compare" / "digits" / name).is_file()
    print(", ".join(f"{k}: {v:.0f} s" for k, v in timings.items()))
