"""Floe workers: file conversion and the Celery tasks that run it on each host."""
