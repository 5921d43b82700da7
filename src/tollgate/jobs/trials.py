"""Trial-ending reminders for trials whose `trial_will_end` event never came."""

from __future__ import annotations

from tollgate.bootstrap import Container
from tollgate.services.trial_reminders import remind_trials_ending


def remind_trials(app: Container) -> int:
    """Queue the `trial_ending` email for trials ending within three days, once each."""
    return remind_trials_ending(db=app.db, catalog=app.catalog, clock=app.clock)
