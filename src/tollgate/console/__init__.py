"""The operator console at /console: pages over the same services as the JSON routes."""
