"""Rebuild the sample exports in this folder (deterministic: the same files every time).

    python samples/make_samples.py

`donor-crm-activities.csv` looks like a donor CRM's interaction export (UTF-8, US dates
with AM/PM, a status column); `salesforce-activities.xlsx` like a Salesforce report saved
as Excel (a title above the header, real date cells, numeric ids, a second sheet). Both
refer to the sandbox's seeded contacts (ids 10001-11000) and hold a few rows that are
wrong on purpose, each described in samples/README.md.
"""

from __future__ import annotations

import csv
import random
from datetime import datetime, timedelta
from pathlib import Path

from openpyxl import Workbook

HERE = Path(__file__).parent
FIRST = [
    "Maria",
    "James",
    "Aisha",
    "Chen",
    "Olivia",
    "Diego",
    "Fatima",
    "Liam",
    "Sofia",
    "Noah",
    "Hana",
    "Mateo",
    "Zoë",
    "Kwame",
    "Ingrid",
    "Ravi",
]
LAST = [
    "Garcia",
    "Smith",
    "Okafor",
    "Wang",
    "Johnson",
    "Hernández",
    "Khan",
    "Brown",
    "Rossi",
    "Müller",
    "Nakamura",
    "Silva",
    "O'Brien",
    "Mensah",
    "Larsen",
    "Patel",
]
CHANNELS = {
    "Phone Call": ["Thank-you call", "Pledge reminder", "Left voicemail", "Event invitation"],
    "Email": ["Year-end appeal follow-up", "Receipt question", "Newsletter reply"],
    "Meeting": ["Coffee with major donor", "Site visit", "Board introduction"],
    "Text Message": ["Event reminder", "Thank you text"],
    "Note": ["Prefers email contact", "Spouse also gives", "Matching gift eligible"],
    "Task": ["Send handwritten card", "Update mailing address"],
    "Volunteer Shift": ["Food bank sorting", "Gala check-in desk", "Park cleanup"],
}
NOTES = [
    "Very warm conversation; interested in the spring campaign.",
    'Said "call me after the holidays", will follow up in January.',
    "Asked about planned giving, sent brochure.\nFollow-up scheduled.",
    "Gave $250, wants receipt by email, not post.",
    "Café meeting went well — loves the youth program 🎉",
    "",
]


def _live_contact(rng: random.Random) -> int:
    """A seeded sandbox contact that is not archived (the sandbox archives every 50th)."""
    contact = 10001 + rng.randint(0, 998)
    return contact + 1 if contact % 50 == 0 else contact


def _csv_rows(rng: random.Random) -> list[dict[str, str]]:
    start = datetime(2023, 1, 9, 9, 0)
    rows = []
    for n in range(1, 301):
        channel = rng.choice(list(CHANNELS))
        when = start + timedelta(days=rng.randint(0, 600), minutes=15 * rng.randint(0, 36))
        rows.append(
            {
                "Interaction ID": f"INT-{n:05d}",
                "Givebutter Contact ID": str(_live_contact(rng)),
                "Donor Name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                "Channel": rng.choice(
                    [channel, channel, channel, channel.upper(), f" {channel.lower()} "]
                ),
                "Purpose": rng.choice(["Stewardship", "Solicitation", "Cultivation", ""]),
                "Subject": rng.choice(CHANNELS[channel]),
                "Notes": rng.choice(NOTES),
                "Date": when.strftime("%m/%d/%Y %I:%M %p") if n % 7 else when.strftime("%m/%d/%Y"),
                "Status": "Cancelled" if n % 41 == 0 else "Completed",
            }
        )
    # Rows that are wrong on purpose (see samples/README.md).
    rows[11]["Givebutter Contact ID"] = ""  # row 13: no contact
    rows[23]["Givebutter Contact ID"] = "N/A"  # row 25: not an id
    rows[35]["Channel"] = "Carrier Pigeon"  # row 37: unmapped type
    rows[47]["Date"] = "31/02/2024"  # row 49: not a date
    rows[59]["Subject"] = "Long subject: " + "details " * 40  # row 61: cut to 255
    rows[71]["Date"] = "2024-06-01T15:30:00+02:00"  # row 73: ISO with offset
    rows[83]["Givebutter Contact ID"] = "10050"  # row 85: archived (403)
    rows[95]["Givebutter Contact ID"] = "99999"  # row 97: unknown (404)
    rows[107]["Channel"] = ""  # row 109: blank -> default
    return rows


def write_csv(path: Path) -> None:
    rows = _csv_rows(random.Random(20240301))
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_xlsx(path: Path) -> None:
    rng = random.Random(20240302)
    book = Workbook()
    about = book.active
    about.title = "About"
    about.append(["Activity report exported from Salesforce"])
    sheet = book.create_sheet("Activities")
    sheet.append(["Activities with Contacts — FY24"])
    sheet.append(["Generated 2024-07-01"])
    sheet.append(
        [
            "Activity ID",
            "GB Contact Id",
            "Task Subtype",
            "Subject",
            "Comments",
            "Activity Date",
            "Owner",
        ]
    )
    subtypes = {
        "Call": "Phone Call",
        "Email": "Email",
        "Event": "Meeting",
        "Text": "Text Message",
        "Task": "Task",
        "Volunteer": "Volunteer Shift",
        "Note": "Note",
    }
    for n in range(1, 201):
        subtype = rng.choice(list(subtypes))
        when = datetime(2023, 7, 3, 8, 0) + timedelta(
            days=rng.randint(0, 360), minutes=30 * rng.randint(0, 20)
        )
        sheet.append(
            [
                f"00T{n:06d}",
                _live_contact(rng),
                subtype,
                rng.choice(CHANNELS[subtypes[subtype]]),
                rng.choice(NOTES),
                when,
                rng.choice(["J. Rivera", "P. Osei", "K. Lund"]),
            ]
        )
    # Rows that are wrong on purpose (row numbers as Excel shows them; header is row 3).
    sheet["B14"] = None  # row 14: no contact
    sheet["C24"] = "Fax"  # row 24: unmapped type
    sheet["F34"] = "sometime in May"  # row 34: a date typed as text that is not a date
    sheet["B44"] = 10100  # row 44: archived contact (403 when sent)
    book.save(path)


if __name__ == "__main__":
    write_csv(HERE / "donor-crm-activities.csv")
    write_xlsx(HERE / "salesforce-activities.xlsx")
    print("wrote", HERE / "donor-crm-activities.csv", "and", HERE / "salesforce-activities.xlsx")
