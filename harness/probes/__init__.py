"""Readings of the machine itself: a process's own memory, contention from other work, and a fixed calibration."""
