"""``python -m qam_lite VERB ...``: the same as ``qam-lite VERB ...`` (see :mod:`qam_lite.cli`)."""

import sys

from qam_lite.cli import main

sys.exit(main())
