"""Running a compiled plan: fetch, validate, transform, load. Never imports ``config`` or ``cli``."""
