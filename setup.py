"""Install recbole-invrl (README: Quick start; docs/compatibility.md for the Python versions).

The top-level ``dataset_configs/`` is the place to edit dataset settings; a built package
(``pip install .``, a wheel) carries a copy inside, as ``recbole_invrl/dataset_configs/``.
"""
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithDatasetConfigs(build_py):
    """``build_py`` that also copies ``dataset_configs/*.yaml`` into the built package."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "recbole_invrl" / "dataset_configs"
        target.mkdir(parents=True, exist_ok=True)
        for file in sorted((ROOT / "dataset_configs").glob("*.yaml")):
            shutil.copy2(file, target / file.name)


setup(
    name="recbole-invrl",
    version="0.1.0",
    description=(
        "Invariant Representation Learning for Multimedia Recommendation "
        "(InvRL, MM'22) as a RecBole 1.2 plugin"
    ),
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    # RecBole 1.2.1 requires ray <= 2.6.3, whose wheels stop at CPython 3.11: on 3.12 and
    # newer, install with uv and constraints/overrides.txt, which drops ray there (nothing
    # here imports it). numpy 2.x (the current stack) needs 3.11 or newer.
    python_requires=">=3.10",
    packages=find_packages(include=["recbole_invrl", "recbole_invrl.*"]),
    package_data={"recbole_invrl": ["properties/*.yaml", "properties/model/*.yaml"]},
    install_requires=[
        # Ranges are what the test suite passes on: the pinned stack (constraints/pinned.txt:
        # RecBole's own era, the CPU wheel of torch 2.13.0) and the current one
        # (constraints/current.txt: numpy 2.4, pandas 3.1, scipy 1.17, hyperopt 0.3,
        # torch 2.14.1). recbole_invrl/shims.py makes RecBole 1.2.1 work on the newer ones.
        "recbole==1.2.1",
        "torch>=2.1,<=2.14.1",
        "numpy>=1.24,<2.5",
        "scipy>=1.10,<1.18",
        "pandas>=2.0,<3.2",
        "pyyaml>=6",
        "scikit-learn>=1.3",
        "tqdm>=4.60",
        "tensorboard>=2.10",
        "matplotlib>=3.7",  # the paper-experiment plots
        # ray (pulled by recbole) needs pkg_resources, gone from setuptools 81.
        "setuptools<81; python_version < '3.12'",
        # run_hyper.py: RecBole's HyperTuning (its exhaustive search is shimmed for >= 0.2.7).
        "hyperopt>=0.2.5,<0.4",
    ],
    extras_require={"test": ["pytest>=7"]},
    entry_points={"console_scripts": [
        "recbole-invrl = recbole_invrl.__main__:run_model",
        "recbole-invrl-benchmark = recbole_invrl.__main__:benchmark",
        "recbole-invrl-experiment = recbole_invrl.__main__:experiment",
        "recbole-invrl-hyper = recbole_invrl.__main__:hyper",
    ]},
    cmdclass={"build_py": BuildPyWithDatasetConfigs},
)
