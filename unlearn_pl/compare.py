"""Deprecated: the comparison runner moved to :mod:`unlearn_pl.benchmark` (``unlearn-pl-compare``
is unchanged)."""

import warnings

from unlearn_pl.benchmark import *  # noqa: F403
from unlearn_pl.benchmark import __all__, main  # noqa: F401

warnings.warn("unlearn_pl.compare is deprecated and will be removed in 0.3: import from "
              "unlearn_pl.benchmark", DeprecationWarning, stacklevel=2)

if __name__ == "__main__":
    main()
