"""``python -m cxr_utils.data DIR``: runs the command line of ``cxr_utils.data.cli``."""

import sys

from cxr_utils.data.cli import main

if __name__ == "__main__":
    sys.exit(main())
