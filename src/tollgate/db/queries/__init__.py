"""Named statements, one module per table group.

Services call these instead of writing SQL: every dialect fork (PostgreSQL or SQLite) and every
driver-level speed trick lives here, measured and commented where it is.
"""
