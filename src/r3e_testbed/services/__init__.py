"""Long-running services built on the pipeline package (run as systemd units on the testbed)."""
