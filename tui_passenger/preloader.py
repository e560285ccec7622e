"""``python -m tui_passenger.preloader``: the process that smart spawning forks from."""

import sys

from tui_passenger.runtime.preloader import main

if __name__ == "__main__":
    sys.exit(main())
