"""``python -m tui_passenger``: the same as the ``tui-passenger`` command."""

import sys

from tui_passenger.cli import main

if __name__ == "__main__":
    sys.exit(main())
