"""``python -m unlearn_pl.benchmark``: the same as ``unlearn-pl-compare``."""

from unlearn_pl.benchmark.cli import main

main()
