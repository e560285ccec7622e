"""Authors and their articles."""

from __future__ import annotations

from django.db import models


class Author(models.Model):
    """Who wrote an article."""

    name = models.CharField(max_length=80)
    email = models.CharField(max_length=120)


class Article(models.Model):
    """One article of the list page."""

    title = models.CharField(max_length=200)
    slug = models.CharField(max_length=200)
    summary = models.TextField()
    author = models.ForeignKey(Author, on_delete=models.CASCADE)
    published = models.DateTimeField()
    comments = models.IntegerField(default=0)
