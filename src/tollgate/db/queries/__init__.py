"""Named statements, one module per table group; the dialect differences stay in here."""
