"""The catalog: SQLAlchemy 2 async on PostgreSQL (production) or SQLite (embedded)."""
