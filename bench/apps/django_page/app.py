"""A real Django page for bench/throughput.py: an ORM query (the 48 latest articles of 500,
with their authors: a join) rendered through a template with inheritance, ~20 KB of HTML,
from SQLite, with Django's usual middleware.

The database is built at import when missing (``BENCH_DJANGO_DB``, else a file in the temp
directory): into a temporary file renamed into place, so workers starting together do not
trip over each other.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import django
from django.conf import settings

HERE = Path(__file__).resolve().parent
DB = os.environ.get("BENCH_DJANGO_DB") or os.path.join(tempfile.gettempdir(),
                                                       "tp-bench-django-page.sqlite3")
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    SECRET_KEY="bench-only-not-secret",
    ROOT_URLCONF="pagesite.urls",
    INSTALLED_APPS=["pagesite"],
    MIDDLEWARE=["django.middleware.security.SecurityMiddleware",
                "django.middleware.common.CommonMiddleware",
                "django.middleware.clickjacking.XFrameOptionsMiddleware"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DB}},
    TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True}],
    USE_TZ=True,
)
django.setup()

from pagesite.data import ensure_db  # noqa: E402

ensure_db(DB)

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
