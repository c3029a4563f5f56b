"""Queue-driven autoscaling of the Celery worker pool: the decision logic, free of I/O."""
