"""Install recbole-invrl: ``pip install -e .`` (see README for the pinned stack)."""
from setuptools import find_packages, setup

setup(
    name="recbole-invrl",
    version="0.1.0",
    description=(
        "Invariant Representation Learning for Multimedia Recommendation "
        "(InvRL, MM'22) as a RecBole 1.2 plugin"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9,<3.13",
    packages=find_packages(include=["recbole_invrl", "recbole_invrl.*"]),
    package_data={"recbole_invrl": ["properties/*.yaml", "properties/model/*.yaml"]},
    install_requires=[
        # RecBole 1.2.1 and the versions around it that work together (NOTES §5):
        # numpy 2 breaks RecBole's Config (np.float_), scipy >= 1.12 breaks the
        # dok_matrix path of LightGCN/NGCF, torch 2.13.0 is the CPU wheel on disk
        # (a CUDA build of 2.13.0 satisfies the same pin on a GPU machine).
        "recbole==1.2.1",
        "torch>=2.1,<=2.13.0",
        "numpy>=1.24,<2",
        "scipy>=1.10,<1.12",
        "pandas>=2.0,<2.4",
        "pyyaml>=6",
        "scikit-learn>=1.3",
        "tqdm>=4.60",
        "tensorboard>=2.10",
        "matplotlib>=3.7",  # the paper-experiment plots
        # ray (pulled by recbole) needs pkg_resources, gone from setuptools 81.
        "setuptools<81",
        # run_hyper.py: RecBole's HyperTuning. Its exhaustive search hands hyperopt a
        # numpy RandomState; hyperopt >= 0.2.6 draws with Generator.integers and fails
        # ('RandomState' object has no attribute 'integers'), so 0.2.5 it is.
        "hyperopt==0.2.5",
    ],
    extras_require={"test": ["pytest>=7"]},
)
