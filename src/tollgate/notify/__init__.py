"""Notifications to people: emails rendered from templates and sent through SMTP or a dev sink."""
