"""Threshold family: hi / hihi / lo / lolo limits on scalar signals (`detector.py`), and the
`threshold` rule kind of the device files (`rule.py`)."""

from detectors.threshold.detector import ThresholdDetector, limit_problems

__all__ = ["ThresholdDetector", "limit_problems"]
