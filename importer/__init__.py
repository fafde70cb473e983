"""givebutter-import: bring activity history from CSV and Excel exports into Givebutter.

The pipeline has five stages, each a module of its own:

    read (read.py) -> map (mapper.py, mapping.py, payload.py) -> resolve (resolve.py)
        -> send (send.py) -> report (report.py)

`importer.pipeline` wires them; `importer.cli` is a thin command line over the pipeline.
"""

__version__ = "0.1.0"
