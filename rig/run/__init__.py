"""The run: the step engine and its state machine, the supervisor's holds, and the one safe state.

`engine` runs a protocol's plan step by step and owns the potentiostat's output; `supervisor` suspends the run
when the data or the devices say so; `safe_state` is the one way into the safe state.
"""
