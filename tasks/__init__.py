"""Image tasks: one module per task, registered by name."""
