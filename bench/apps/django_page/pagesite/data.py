"""The benchmark database: created once, atomically, with deterministic content."""

from __future__ import annotations

import datetime
import os
import random

from django.db import connections


def ensure_db(path: str) -> None:
    """Create the tables and 500 articles by 20 authors at ``path`` if it does not exist."""
    if os.path.exists(path):
        return
    from django.core.management import call_command

    temp = f"{path}.{os.getpid()}.tmp"
    conn = connections["default"]
    conn.close()
    conn.settings_dict["NAME"] = temp
    try:
        call_command("migrate", run_syncdb=True, verbosity=0)
        fill()
    finally:
        conn.close()
        conn.settings_dict["NAME"] = path
    os.replace(temp, path)


def fill() -> None:
    """Deterministic rows (a fixed seed): every database built is the same."""
    from pagesite.models import Article, Author

    rng = random.Random(17)
    words = ["proxy", "worker", "spawn", "memory", "pool", "request", "queue", "latency",
             "fork", "socket", "python", "server", "throughput", "template", "query", "cache"]
    authors = Author.objects.bulk_create(
        Author(name=f"Author {i}", email=f"author{i}@example.org") for i in range(20))
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    Article.objects.bulk_create(
        Article(title=" ".join(rng.choice(words) for _ in range(6)).title(),
                slug=f"article-{i}",
                summary=" ".join(rng.choice(words) for _ in range(24)),
                author=authors[i % len(authors)],
                published=start + datetime.timedelta(hours=i), comments=rng.randrange(50))
        for i in range(500))
