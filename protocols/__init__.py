"""Device protocols: one subpackage per protocol, each behind the driver interface."""
