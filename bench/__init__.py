"""The benchmark behind scripts/bench: see bench/suite.py and docs/performance.md."""
