"""Pressure control: the pure law and its estimators, reading validity, and the loop that owns the press.

`law` decides each move from a usable force (no I/O); `controller` is the async shell that reads the load cell,
checks every reading, trips on over-force and is the only code that moves the press; `release` brings a stack
down to zero force after a run or an abort, bounded in time.
"""
