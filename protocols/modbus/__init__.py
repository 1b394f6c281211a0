"""Modbus TCP (and later RTU): configuration, pure decoding and planning, and the driver."""
