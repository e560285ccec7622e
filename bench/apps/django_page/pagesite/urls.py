"""One page at /."""

from django.urls import path

from pagesite.views import index

urlpatterns = [path("", index)]
