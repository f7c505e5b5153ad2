"""A plugin module that calls sys.exit at import (tests: ovi must survive it)."""

import sys

sys.exit(3)
