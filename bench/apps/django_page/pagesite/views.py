"""The page: the latest articles with their authors, rendered through a template."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from pagesite.models import Article

LATEST = 48


def index(request: HttpRequest) -> HttpResponse:
    """The 48 latest articles (one query with a join) on the list page."""
    articles = Article.objects.select_related("author").order_by("-published")[:LATEST]
    return render(request, "page.html", {"articles": articles, "title": "Latest articles"})
