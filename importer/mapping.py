"""The mapping language: one YAML file says how an export's columns become activities.

A mapping has four sections (see README.md, "The mapping language"):

    source:    how to read the file (encoding, delimiter, sheet, header_row)
    contact:   which column(s) name the Givebutter contact
    activity:  how each payload field (type, subject, note, occurred_at, timezone) is made
    skip:      rules that leave a row out on purpose

The file is parsed into the pydantic models below, so an unknown key, a wrong value or a
missing required part is an error that names its place in the file. `check_columns` then
checks the mapping against an input's header before any row is read. The activity types
and field limits are not restated here: they come from `importer.payload`.
"""

from __future__ import annotations

import string
import zoneinfo
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from importer.errors import MappingError
from importer.payload import ACTIVITY_TYPES, FIELD_NAMES

MAX_MAPPING_BYTES = 1_000_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def normalize_key(value: str) -> str:
    """The form in which `map` keys and skip values are compared: case- and space-insensitive."""
    return " ".join(value.split()).casefold()


def check_timezone_name(name: str) -> str:
    """Accept an IANA timezone name (such as America/New_York), or raise ValueError."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # "America" is a folder
        raise ValueError(
            f"'{name}' is not an IANA timezone name (such as America/New_York or UTC)"
        ) from None
    return name


class SourceSpec(_Strict):
    """How to read the input file; every key is optional."""

    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | int | None = None
    header_row: Annotated[int, Field(ge=1)] = 1

    @field_validator("delimiter")
    @classmethod
    def _one_character(cls, value: str | None) -> str | None:
        if value is not None and value not in {"\\t", "tab"} and len(value) != 1:
            raise ValueError("delimiter must be one character (or 'tab')")
        return "\t" if value in {"\\t", "tab"} else value


ELSE_KEEP = "keep"  # `else: keep`: a value the map does not list passes through unchanged
ELSE_INVALID = "invalid"  # `else: invalid`: a value the map does not list makes the row invalid


class FieldSpec(_Strict):
    """How one payload field is made from a row.

    Exactly one of `column`, `value` or `template` is the source; `column` may name several
    columns, of which the first non-blank is taken. Then, in this order: the value is
    trimmed, looked up in `map` (a value the map does not list is kept, replaced by `else`,
    or an error with `else: invalid`), replaced by `default` when blank, and cut to
    `truncate` characters (the results CSV marks every cut).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    column: str | Annotated[list[str], Field(min_length=1)] | None = None
    value: str | None = None
    template: str | None = None
    default: str | None = None
    map: dict[str, str] | None = None
    else_: str | None = Field(default=None, alias="else")
    truncate: Annotated[int, Field(ge=1)] | None = None
    send_null: bool = False  # a blank value is sent as null instead of being left out
    # occurred_at only:
    formats: list[str] | None = None
    timezone: str | None = None
    date_only: bool | None = None  # None: a cell holding only a date is a calendar day

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        # `subject: Subject Line` is short for `subject: {column: Subject Line}`, and
        # `occurred_at: [ActivityDate, CreatedDate]` for `{column: [...]}`.
        if isinstance(data, str | list):
            return {"column": data}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> FieldSpec:
        sources = [k for k in ("column", "value", "template") if getattr(self, k) is not None]
        if len(sources) > 1:
            raise ValueError(f"give only one of column, value or template (got {sources})")
        if not sources and self.default is None:
            raise ValueError("give one of column, value, template (or at least a default)")
        if self.template is not None and not template_columns(self.template):
            raise ValueError("template names no column: write columns as {Column Name}")
        if self.else_ is not None and self.map is None:
            raise ValueError("else belongs with a map: it says what a value the map lacks becomes")
        return self

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str | None) -> str | None:
        return None if value is None else check_timezone_name(value)

    @field_validator("map")
    @classmethod
    def _map_keys_distinct(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        seen: dict[str, str] = {}
        for key in value:
            norm = normalize_key(str(key))
            if norm in seen:
                raise ValueError(f"keys '{seen[norm]}' and '{key}' are the same key")
            seen[norm] = str(key)
        return {str(k): str(v) for k, v in value.items()}

    def columns(self) -> list[str]:
        if isinstance(self.column, list):
            return list(self.column)
        if self.column is not None:
            return [self.column]
        if self.template is not None:
            return template_columns(self.template)
        return []

    def column_uses(self, path: str) -> list[tuple[str, str]]:
        """(key path, column) for each column this spec reads, e.g. `… → column → 2`."""
        if isinstance(self.column, list):
            return [(f"{path} → column → {i}", c) for i, c in enumerate(self.column, start=1)]
        key = "column" if self.column is not None else "template"
        return [(f"{path} → {key}", column) for column in self.columns()]

    def else_value(self) -> str | None:
        """The value `else` gives an unlisted value; None for `keep` and `invalid`."""
        return None if self.else_ in (None, ELSE_KEEP, ELSE_INVALID) else self.else_

    def constants(self) -> list[str]:
        """Every literal value this spec can produce (value, default, else, map targets)."""
        found = [v for v in (self.value, self.default, self.else_value()) if v is not None]
        return found + list((self.map or {}).values())


class ActivitySpec(_Strict):
    """One `FieldSpec` per payload field; `type` is required."""

    type: FieldSpec
    subject: FieldSpec | None = None
    note: FieldSpec | None = None
    occurred_at: FieldSpec | None = None
    timezone: FieldSpec | None = None

    @field_validator("type")
    @classmethod
    def _types_exist(cls, spec: FieldSpec) -> FieldSpec:
        for value in spec.constants():
            if value not in ACTIVITY_TYPES:
                raise ValueError(f"'{value}' is not an activity type ({', '.join(ACTIVITY_TYPES)})")
        return spec

    @field_validator("timezone")
    @classmethod
    def _timezones_exist(cls, spec: FieldSpec | None) -> FieldSpec | None:
        for value in spec.constants() if spec is not None else []:
            check_timezone_name(value)
        return spec

    @field_validator("type", "subject", "note", "timezone")
    @classmethod
    def _date_options_on_occurred_at_only(cls, spec: FieldSpec | None) -> FieldSpec | None:
        dated = ("formats", "timezone", "date_only")
        if spec is not None and any(getattr(spec, key) is not None for key in dated):
            raise ValueError("formats, timezone and date_only belong to occurred_at only")
        return spec

    def fields(self) -> dict[str, FieldSpec]:
        return {name: spec for name in FIELD_NAMES if (spec := getattr(self, name)) is not None}


ContactKind = Literal["id", "email", "external_id"]
CONTACT_KINDS: tuple[ContactKind, ...] = ("id", "email", "external_id")


class CreateSpec(_Strict):
    """How to create a contact that no one has the email of (only with --create-contacts):
    the columns of its first name, last name and (optionally) phone."""

    first_name: str
    last_name: str
    phone: str | None = None

    def columns(self) -> dict[str, str]:
        """`NewContact` field -> column."""
        named = {"first_name": self.first_name, "last_name": self.last_name, "phone": self.phone}
        return {name: column for name, column in named.items() if column is not None}


class ContactSpec(_Strict):
    """Which columns name the contact, tried in order (id, then email, then external_id).

    Write `contact: Contact ID` for a column of Givebutter contact ids, or a mapping of kinds
    to columns: `contact: {id: GB ID, email: Email, external_id: Legacy ID}`. With `email`,
    `create: {first_name: First, last_name: Last, phone: Phone}` says how to create a
    contact no one has the email of (and `--create-contacts` lets it happen).
    """

    id: str | None = None
    email: str | None = None
    external_id: str | None = None
    create: CreateSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"id": data}
        return data

    @model_validator(mode="after")
    def _at_least_one(self) -> ContactSpec:
        if not self.lookups():
            raise ValueError("name at least one column: id, email or external_id")
        if self.create is not None and self.email is None:
            raise ValueError("create: needs an email column: contacts are created by email")
        return self

    def lookups(self) -> list[tuple[ContactKind, str]]:
        """(kind, column) pairs in the order they are tried."""
        return [(kind, col) for kind in CONTACT_KINDS if (col := getattr(self, kind)) is not None]


class SkipRule(_Strict):
    """Leave a row out on purpose when its `column` ... equals / is in / is blank / contains.

    Comparisons are trimmed and case-insensitive, like `map` keys.
    """

    column: str
    equals: str | None = None
    in_: list[str] | None = Field(default=None, alias="in")
    blank: bool | None = None
    contains: str | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _one_test(self) -> SkipRule:
        tests = [k for k in ("equals", "in_", "blank", "contains") if getattr(self, k) is not None]
        if len(tests) != 1:
            raise ValueError("give exactly one of equals, in, blank or contains")
        return self

    def describe(self) -> str:
        if self.equals is not None:
            return f"{self.column} equals '{self.equals}'"
        if self.in_ is not None:
            return f"{self.column} is one of " + ", ".join(f"'{v}'" for v in self.in_)
        if self.contains is not None:
            return f"{self.column} contains '{self.contains}'"
        return f"{self.column} is {'blank' if self.blank else 'not blank'}"


class Mapping(_Strict):
    """A whole mapping file."""

    source: SourceSpec = SourceSpec()
    key: list[str] = []
    """The source record's own id: a column, or several that together name one record.
    With a key, a row is its record: new → created, changed → updated, same → unchanged."""
    contact: ContactSpec
    activity: ActivitySpec
    skip: list[SkipRule] = []

    @field_validator("skip", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value

    @field_validator("key", mode="before")
    @classmethod
    def _one_column_or_several(cls, value: Any) -> Any:
        if value is None:
            return []
        return [value] if isinstance(value, str) else value

    @field_validator("key")
    @classmethod
    def _distinct_columns(cls, value: list[str]) -> list[str]:
        if any(not column.strip() for column in value):
            raise ValueError("a key column name is blank")
        if len(set(value)) != len(value):
            raise ValueError("the key names a column twice")
        return value

    def columns(self) -> list[str]:
        """Every input column the mapping reads, in the order first named."""
        return list(dict.fromkeys(column for _, column in self.column_uses()))

    def column_uses(self) -> list[tuple[str, str]]:
        """(key path, column) for every place the mapping names a column, in file order:
        `contact → email`, `activity → subject → template`, `skip → 1 → column`."""
        uses = [(f"key → {n}", col) for n, col in enumerate(self.key, start=1)]
        uses += [(f"contact → {kind}", col) for kind, col in self.contact.lookups()]
        if self.contact.create is not None:
            created = self.contact.create.columns().items()
            uses += [(f"contact → create → {name}", col) for name, col in created]
        for name, spec in self.activity.fields().items():
            uses.extend(spec.column_uses(f"activity → {name}"))
        uses.extend((f"skip → {n} → column", r.column) for n, r in enumerate(self.skip, start=1))
        return uses


def template_columns(template: str) -> list[str]:
    """The column names a template such as "{Purpose}: {Subject}" refers to."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise ValueError(f"template {template!r}: {error}") from None
    return [name for _, name, _, _ in parsed if name]


def template_parts(template: str) -> list[tuple[str, str | None]]:
    """(literal text, column or None) pairs, in order, for building a template's value."""
    return [(literal, name or None) for literal, name, _, _ in string.Formatter().parse(template)]


def load_mapping(path: str | Path) -> Mapping:
    """Read and validate a mapping file; every problem is a MappingError naming the key."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise MappingError(f"cannot read mapping {path}: {error.strerror or error}") from None
    if len(raw) > MAX_MAPPING_BYTES:
        raise MappingError(f"mapping {path} is larger than {MAX_MAPPING_BYTES:,} bytes")
    return parse_mapping(raw, name=str(path))


def parse_mapping(text: str | bytes, *, name: str = "mapping") -> Mapping:
    """Validate mapping text (YAML, loaded with the safe loader)."""
    try:
        data = yaml.load(text, Loader=_BoundedSafeLoader)
    except yaml.YAMLError as error:
        raise MappingError(f"{name}: not valid YAML: {_yaml_reason(error)}") from None
    except _TooManyAliases:
        raise MappingError(
            f"{name}: uses more than {_BoundedSafeLoader.max_aliases} YAML aliases; "
            "write the mapping out plainly"
        ) from None
    if not isinstance(data, dict):
        raise MappingError(f"{name}: a mapping must be a YAML mapping with contact and activity")
    try:
        return Mapping.model_validate(data)
    except ValidationError as error:
        raise MappingError(f"{name}: {describe_mapping_error(error)}") from None


def describe_mapping_error(error: ValidationError) -> str:
    """The first problem, located by its path of keys (e.g. `activity → type → map`)."""
    problems: dict[str, list[str]] = {}
    for item in error.errors(include_url=False):
        # List positions count from 1, as the results count skip rules ("skip rule 1").
        parts = [str(p + 1) if isinstance(p, int) else str(p) for p in item["loc"]]
        where = " → ".join(p for p in parts if p not in _UNION_TAGS)
        where = where.replace("in_", "in").replace("else_", "else")
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown key"
        elif item["type"] == "missing":
            msg = "is required"
        elif item["type"] in _WRONG_KIND:
            msg = _WRONG_KIND[item["type"]]
        problems.setdefault(where, []).append(msg)
    # A key that may be text or a list (`column`) fails once for each: say both at once.
    described = [
        f"{where}: {' or '.join(dict.fromkeys(msgs))}" if where else msgs[0]
        for where, msgs in problems.items()
    ]
    more = f" (and {len(described) - 1} more)" if len(described) > 1 else ""
    return described[0] + more


_WRONG_KIND = {
    "string_type": "should be text",
    "list_type": "should be a list",
    "too_short": "should list at least one item",
    "model_type": "should be a column name or keys such as {column: ...}",
}
_UNION_TAGS = {"str", "int", "list[str]", "function-before[_shorthand(), FieldSpec]"}


def check_columns(mapping: Mapping, columns: Iterable[str]) -> None:
    """Raise MappingError if the mapping names a column the input does not have; the
    message names the key to edit (`contact → id: the input has no column 'CHANGE ME'`)."""
    columns = list(columns)
    present = set(columns)
    missing = [(path, col) for path, col in mapping.column_uses() if col not in present]
    if missing:
        shown = "; ".join(f"{path}: the input has no column '{col}'" for path, col in missing)
        have = ", ".join(f"'{c}'" for c in columns[:20]) + (", ..." if len(columns) > 20 else "")
        raise MappingError(f"{shown} (its columns: {have})")


class _TooManyAliases(Exception):
    pass


class _BoundedSafeLoader(yaml.SafeLoader):
    """The safe loader, refusing documents that lean on many aliases ("billion laughs")."""

    max_aliases = 100

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases = getattr(self, "_aliases", 0) + 1
            if self._aliases > self.max_aliases:
                raise _TooManyAliases
        return super().compose_node(parent, index)


def _yaml_reason(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"{problem} (line {mark.line + 1})" if mark is not None else str(problem)
