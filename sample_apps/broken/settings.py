"""Settings of the broken sample app: DATABASE_URL was renamed to DB_URL in a refactor."""

DEBUG = False
DB_URL = "sqlite:///app.db"
SECRET_KEY = "not-a-secret"
