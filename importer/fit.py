"""How a mapping fits an input, for `givebutter-import check`: the columns it names exist
(`importer.mapping.check_columns`), and which fields every row leaves blank.

A field blank in every row is legal (the field is left out of every request), but it is
nearly always a mapping pointing at the wrong column, or an export without that data: a
warning, not an error. The whole file is mapped to know (no request is made).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow.compute as pc

from importer.mapper import Mapper
from importer.mapping import Mapping, check_columns
from importer.read import SourceTable


@dataclass
class Fit:
    """What `check` found: how many rows, and a warning per field left blank in all."""

    rows: int = 0
    warnings: list[str] = field(default_factory=list)


def check_fit(mapping: Mapping, table: SourceTable) -> Fit:
    """Raise MappingError if a column is missing; else map every row and say which fields
    (and contact columns) are blank in every row that no skip rule left out."""
    check_columns(mapping, table.columns)
    mapper = Mapper(mapping)
    fields = mapping.activity.fields()
    filled = dict.fromkeys(fields, False)
    contacts = {column: False for _, column in mapping.contact.lookups()}
    rows = 0
    for chunk in table.chunks():
        mapped = mapper.map_columns(chunk)
        kept = np.asarray(mapped.skipped, dtype=object) == ""
        rows += len(mapped)
        for name, values in mapped.values.items():
            if name in filled and not filled[name]:
                filled[name] = bool(np.any(pc.not_equal(values, "").to_numpy(False) & kept))
        for column in contacts:
            if not contacts[column]:
                cells = chunk[column].astype(str).str.strip().to_numpy()
                contacts[column] = bool(np.any((cells != "") & kept))
    fit = Fit(rows=rows)
    if not rows:
        return fit
    for kind, column in mapping.contact.lookups():
        if not contacts[column]:
            fit.warnings.append(f"contact → {kind}: column '{column}' is blank in every row")
    for name, spec in fields.items():
        if not filled[name]:
            columns = spec.columns()
            named = ", ".join(f"'{c}'" for c in columns)
            source = f" (column{'s' if len(columns) > 1 else ''} {named})" if columns else ""
            fit.warnings.append(f"activity → {name}: blank in every row{source}")
    return fit
