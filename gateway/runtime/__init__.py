"""Services of the running daemon beside the pipeline: the health report and its endpoints,
the `health` and `summaries/<asset>` topics, systemd notification, reload and the saving of
learnt detector state."""
