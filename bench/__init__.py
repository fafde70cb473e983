"""The benchmark suite (issue 7): `python -m bench [--quick] [--only CASE,...] [--keep]`.

It makes its own data (`bench/data/`, cached), starts its own sandboxes (on 127.0.0.1, each
in a process of its own), runs every case of issue 7's table and prints the machine and one
markdown table, each figure beside its reference measured in the same run. Exit code 0
when every goal that could be measured is met, 1 otherwise.

    data.py        the activity exports (CSV, .xlsx) and their mappings
    child.py       one measured work in a fresh process: a dry run, or a pandas reference
    processes.py   running those, and the importer's CLI, as subprocesses
    sandbox.py     the sandbox as a subprocess, and its stats
    reference.py   the minimal aiohttp loop that sending is compared with
    rates.py       request rates from the sandbox's arrival times
    cases.py       the cases
    table.py       the machine description and the table
"""
