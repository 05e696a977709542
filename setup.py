"""Two-stage recommender: YouTube-DNN candidate generation + NeuMF ranking, served by TF Serving."""

from setuptools import find_packages, setup

LINT_REQUIREMENTS = ["ruff==0.17.*", "mypy==2.4.*"]
BENCH_REQUIREMENTS = [
    "implicit>=0.7.2",
    "faiss-cpu>=1.8",
    "annoy>=1.17",
    "matplotlib>=3.8",
    "psutil>=5.9",
    "threadpoolctl>=3.1",
]

# python -m trainer.tune: Optuna's TPE search, pruning and resumable SQLite studies.
TUNE_REQUIREMENTS = ["optuna>=3.6"]

setup(
    name="recommender",
    version="0.1.0",
    description=__doc__,
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["recsys_common", "trainer", "trainer.*", "serving", "serving.*", "bench",
                                    "bench.*"]),
    package_data={"serving": ["*.yml"]},  # docker-compose.yml; serving._protos are packages
    install_requires=[
        "tensorflow==2.20.*",
        "tf-keras==2.20.*",
        "tensorflow-recommenders==0.7.7",
        "scann==1.4.2",
        "tensorflow-serving-api==2.20.*",
        "grpcio>=1.60",
        "protobuf>=7.35.1",  # the vendored serving/_protos gencode (grpcio-tools 1.85) checks it
        "numpy>=1.26",
        "pandas>=2.1",
        "pyyaml>=6.0",
        "tqdm>=4.66",
        "waitress>=3.0.1",  # the REST listener (serving/rest.py)
    ],
    extras_require={
        # The benchmark libraries are part of the test extra: the tests run the peers and the
        # report end to end, so they must not be skipped in CI.
        "test": BENCH_REQUIREMENTS + TUNE_REQUIREMENTS + ["pytest>=8", "requests>=2.31", "prometheus-client>=0.20"],
        "bench": BENCH_REQUIREMENTS,
        "tune": TUNE_REQUIREMENTS,
        # The linters CI runs (.ci/run), pinned to a minor release so a new rule cannot turn CI red by itself.
        "lint": LINT_REQUIREMENTS,
        "dev": LINT_REQUIREMENTS + ["grpcio-tools>=1.60"],
    },
)
