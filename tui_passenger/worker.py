"""``python -m tui_passenger.worker``: a directly spawned worker process."""

import sys

from tui_passenger.runtime.worker import main

if __name__ == "__main__":
    sys.exit(main())
