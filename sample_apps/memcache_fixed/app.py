"""``sample_apps/memcache_shared`` with its fix switched on, so a config names it by root.

It sets ``MEMCACHE_RECONNECT_IN_HOOK=1`` and then runs ``memcache_shared/app.py``: the app
registers its ``starting_worker_process`` hook, and every forked worker drops the
connection it inherited from the preloader and opens its own (different local ports, no
mixed-up replies). Everything else, including ``MEMCACHED_ADDR``, is as in memcache_shared.
"""

import importlib.util
import os
import sys

os.environ["MEMCACHE_RECONNECT_IN_HOOK"] = "1"

_SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "memcache_shared",
                       "app.py")
# Its own module name: this file is "app" already.
_spec = importlib.util.spec_from_file_location("memcache_shared_app", _SHARED)
memcache_shared = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = memcache_shared
_spec.loader.exec_module(memcache_shared)

application = memcache_shared.application
