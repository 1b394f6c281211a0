"""CAN bus: python-can for the bus, cantools for DBC files (both imported only in this package)."""
