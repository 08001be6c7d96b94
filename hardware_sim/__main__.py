"""`python -m hardware_sim`."""

from hardware_sim.cli import main

main()
