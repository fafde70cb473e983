"""The mapping file is validated before any row is read, with errors that name the key."""

import pytest

from importer.errors import MappingError
from importer.mapping import check_columns, load_mapping, parse_mapping
from tests.conftest import MAPPINGS

MINIMAL = "contact: Contact ID\nactivity:\n  type: {value: note}\n"


def error_of(text: str) -> str:
    with pytest.raises(MappingError) as caught:
        parse_mapping(text)
    return str(caught.value)


def test_a_minimal_mapping_is_valid():
    mapping = parse_mapping(MINIMAL)
    assert mapping.contact.lookups() == [("id", "Contact ID")]
    assert mapping.activity.type.value == "note"


def test_a_field_given_as_a_string_is_a_column():
    mapping = parse_mapping("contact: C\nactivity:\n  type: Kind\n  note: Notes\n")
    assert mapping.activity.type.column == "Kind" and mapping.activity.note.column == "Notes"


def test_an_unknown_top_level_key_is_named():
    assert error_of(MINIMAL + "skipp: []\n") == "mapping: skipp: unknown key"


def test_an_unknown_key_inside_a_field_is_named_with_its_path():
    assert error_of("contact: C\nactivity:\n  type: {value: note, colour: red}\n") == (
        "mapping: activity → type → colour: unknown key"
    )


def test_a_type_in_a_map_that_is_not_an_activity_type_is_named():
    text = "contact: C\nactivity:\n  type: {column: K, map: {Phone Call: phonecall}}\n"
    assert "activity → type: 'phonecall' is not an activity type" in error_of(text)


def test_a_constant_type_that_is_not_an_activity_type_is_refused():
    assert "'call' is not an activity type" in error_of(
        "contact: C\nactivity: {type: {value: call}}"
    )


def test_an_invalid_timezone_for_dates_is_named():
    text = MINIMAL + "  occurred_at: {column: D, timezone: Mars/Olympus}\n"
    assert error_of(text) == (
        "mapping: activity → occurred_at → timezone: 'Mars/Olympus' is not an IANA timezone "
        "name (such as America/New_York or UTC)"
    )


def test_an_invalid_constant_timezone_value_is_refused():
    assert "'Eastern' is not an IANA timezone" in error_of(
        MINIMAL + "  timezone: {value: Eastern}\n"
    )


def test_type_is_required():
    assert error_of("contact: C\nactivity: {note: N}\n") == "mapping: activity → type: is required"


def test_contact_is_required():
    assert error_of("activity: {type: {value: note}}\n") == "mapping: contact: is required"


def test_a_field_with_two_sources_is_refused():
    text = "contact: C\nactivity:\n  type: {column: K, value: note}\n"
    assert "give only one of column, value or template" in error_of(text)


def test_a_template_without_columns_is_refused():
    assert "template names no column" in error_of(MINIMAL + "  subject: {template: plain}\n")


def test_dates_options_on_another_field_are_refused():
    text = MINIMAL + "  subject: {column: S, formats: ['%Y']}\n"
    assert error_of(text) == (
        "mapping: activity → subject: formats, timezone and date_only belong to occurred_at only"
    )


def test_a_skip_rule_needs_exactly_one_test():
    assert "give exactly one of equals, in, blank or contains" in error_of(
        MINIMAL + "skip:\n  - {column: S}\n"
    )


def test_map_keys_that_differ_only_in_case_and_spaces_are_refused():
    text = "contact: C\nactivity:\n  type: {column: K, map: {Call: phone_call, ' call ': sms}}\n"
    assert "are the same key" in error_of(text)


def test_yaml_that_does_not_parse_gives_the_line():
    assert "not valid YAML" in error_of("contact: [unclosed\n") and "line" in error_of(
        "contact: [unclosed\n"
    )


def test_a_yaml_tag_that_would_build_a_python_object_is_refused():
    text = MINIMAL + "x: !!python/object/apply:os.system ['echo pwned']\n"
    assert "could not determine a constructor" in error_of(text)


def test_a_yaml_document_of_many_aliases_is_refused():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 12)]
    assert "aliases" in error_of("\n".join(lines) + "\n")


def test_a_missing_mapping_file_is_a_clear_error(tmp_path):
    with pytest.raises(MappingError, match="cannot read mapping"):
        load_mapping(tmp_path / "nope.yaml")


def test_columns_the_input_lacks_are_named():
    mapping = parse_mapping("contact: Contact ID\nactivity:\n  type: Kind\n  note: Notes\n")
    with pytest.raises(MappingError) as caught:
        check_columns(mapping, ["Contact ID", "Kind"])
    assert str(caught.value).startswith("activity → note → column: the input has no column 'Notes'")


def test_template_and_skip_columns_are_checked_too():
    mapping = parse_mapping(
        MINIMAL + "  subject: {template: '{A}: {B}'}\nskip:\n  - {column: Status, blank: true}\n"
    )
    assert mapping.columns() == ["Contact ID", "A", "B", "Status"]


def test_the_sample_mappings_are_valid():
    for name in ("donor-crm-activities", "salesforce-activities"):
        assert load_mapping(MAPPINGS / f"{name}.yaml").activity.type is not None


def test_else_needs_a_map():
    assert error_of(MINIMAL.replace("{value: note}", "{column: T, else: note}")) == (
        "mapping: activity → type: else belongs with a map: it says what a value the map lacks "
        "becomes"
    )


def test_an_else_value_for_type_must_be_an_activity_type():
    text = MINIMAL.replace("{value: note}", "{column: T, map: {Call: phone_call}, else: fax}")
    assert "activity → type: 'fax' is not an activity type" in error_of(text)


def test_a_column_list_must_name_a_column():
    text = MINIMAL + "  note: {column: []}\n"
    assert error_of(text).startswith("mapping: activity → note → column: should be text or")


def test_every_column_named_by_a_list_is_checked_with_its_place():
    mapping = parse_mapping(MINIMAL + "  occurred_at: [ActivityDate, CreatedDate]\n")
    with pytest.raises(MappingError) as caught:
        check_columns(mapping, ["Contact ID", "ActivityDate"])
    assert str(caught.value).startswith(
        "activity → occurred_at → column → 2: the input has no column 'CreatedDate'"
    )


def test_a_missing_contact_column_names_the_contact_key():
    mapping = parse_mapping("contact: {id: CHANGE ME}\nactivity:\n  type: {value: note}\n")
    with pytest.raises(MappingError) as caught:
        check_columns(mapping, ["Email"])
    assert str(caught.value).startswith("contact → id: the input has no column 'CHANGE ME'")


def test_a_skip_rule_is_named_by_its_number_from_one():
    mapping = parse_mapping(MINIMAL + "skip:\n  - {column: Status, equals: x}\n")
    with pytest.raises(MappingError) as caught:
        check_columns(mapping, ["Contact ID"])
    assert str(caught.value).startswith("skip → 1 → column: the input has no column 'Status'")
