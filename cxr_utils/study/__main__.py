"""``python -m cxr_utils.study``: see ``cxr_utils.study``."""

import sys

from cxr_utils.study.cli import main

if __name__ == "__main__":
    sys.exit(main())
