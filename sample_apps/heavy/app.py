"""A realistically heavy app: Flask, SQLAlchemy ORM, Django templates and numpy.

Importing it takes well over half a second on a fresh interpreter, which is what makes
smart spawning (import once, fork many) worth it. It also builds the kind of module-level
state real apps have: ORM mappings, a compiled template, lookup tables.
"""

import os
import tempfile

import django
import numpy as np
from django.conf import settings
from flask import Flask, jsonify
from sqlalchemy import ForeignKey, String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

if not settings.configured:
    settings.configure(
        DEBUG=False,
        USE_TZ=True,
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates"}],
    )
    django.setup()

from django.contrib.auth.models import User  # noqa: E402  (needs django.setup())
from django.template import engines  # noqa: E402


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "author"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    books: Mapped[list["Book"]] = relationship(back_populates="author")


class Book(Base):
    __tablename__ = "book"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    author_id: Mapped[int] = mapped_column(ForeignKey("author.id"))
    author: Mapped[Author] = relationship(back_populates="books")


# A database file, not "sqlite://": an in-memory SQLite database lives in one connection,
# and every forked worker (rightly) opens connections of its own.
engine = create_engine(f"sqlite:///{tempfile.mkdtemp(prefix='heavy-db-')}/books.db")
Base.metadata.create_all(engine)
with Session(engine) as session:
    session.add_all(
        Author(name=f"author {i}", books=[Book(title=f"book {i}.{j}") for j in range(5)])
        for i in range(200))
    session.commit()

TEMPLATE = engines["django"].from_string(
    "<h1>{{ title }}</h1><ul>{% for b in books %}<li>{{ b }}</li>{% endfor %}</ul>")
LOOKUP = {f"key-{i}": np.arange(i % 64, dtype=np.float64) for i in range(20_000)}
MATRIX = np.random.default_rng(0).random((256, 256))

app = Flask(__name__)
application = app


@app.get("/")
def index():
    with Session(engine) as s:
        titles = s.scalars(select(Book.title).limit(10)).all()
    return TEMPLATE.render({"title": f"heavy app, pid {os.getpid()}", "books": titles})


@app.get("/stats")
def stats():
    return jsonify(pid=os.getpid(), user_model=User.__name__, trace=float(np.trace(MATRIX)),
                   lookups=len(LOOKUP))
