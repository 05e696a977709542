"""Benchmarks of the recommender: `python -m bench` runs every section and writes the report.

Each section is a script runnable on its own as `python -m bench.<name> --out FILE.json [--quick]`;
it writes its figures and the machine it ran on as JSON. The harness (bench/__main__.py) runs the
sections as subprocesses, renders the plots (bench/plots.py) and writes BENCHMARKS.md (bench/report.py).
"""
