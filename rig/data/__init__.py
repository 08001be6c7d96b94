"""Run data: the SQLite store, run folders and their index, export, reports, CE and the deposit/porosity estimate.

Nothing here imports a command-line module or a device driver; `coulombic`, `porosity` and `analysis` are pure.
"""
