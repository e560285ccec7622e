"""The Django app of the benchmark page: models, a view, templates."""
