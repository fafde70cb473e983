"""Rebuild the exports `init` is measured on (deterministic rows: the same data every time).

    python tests/exports/make_exports.py

Seven files shaped like real exports of the CRMs people leave, each beside the mapping a
person would write for it by hand (`NAME.yaml`, written by hand, not by this script):

- salesforce-tasks.csv: a Salesforce Data Loader export of Task. camelCase names, ids
  that are not Givebutter's, a date that falls back to CreatedDate.
- hubspot-aktivitaeten.xlsx: a German HubSpot export saved as Excel. A "Hinweise" sheet
  first, two title rows, German names and values, day-first dates.
- bloomerang-interactions.csv: Bloomerang interactions. "Mail" is a letter; dates
  without times or zero padding.
- donorperfect-contacts.xlsx: a DonorPerfect contact report. Three rows above the header
  (one blank), UPPER_CASE names, Excel date cells.
- lgl-contact-reports.csv: Little Green Light contact reports. ISO dates without times.
- neon-activites-fr.csv: a French Neon CRM export. cp1252 and `;`, French names and
  values, day-first dates, cancelled rows.
- blackbaud-actions.xlsx: Raiser's Edge NXT actions. Two type-like columns (Category is
  the kind; Action Type is not).

A few rows in each are wrong on purpose (an unknown type, a date that is not one), as in
real exports. Contacts are the sandbox's seeded ones (ids 10001-11000, emails
`cN@example.org`).
"""

from __future__ import annotations

import csv
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from openpyxl import Workbook

HERE = Path(__file__).parent
NOTES = [
    "Talked about the spring appeal.",
    "Left a voicemail; will try again Friday.",
    'Said "call me after the holidays".',
    "Interested in volunteering at the food bank.",
    "Sent the annual report, asked for feedback.",
    "",
]
SUBJECTS = ["Thank-you", "Follow-up", "Event invitation", "Renewal", "Site visit", "Check-in"]


def when(rng: random.Random, *, hours: bool = True) -> datetime:
    day = datetime(2023, 9, 1, 9, 0) + timedelta(days=rng.randint(0, 400))
    return day + timedelta(minutes=15 * rng.randint(0, 32)) if hours else day.replace(hour=0)


def contact(rng: random.Random) -> int:
    return rng.randint(10001, 11000)


def rows_of(n: int, seed: int, row: Callable[[random.Random, int], list[object]]) -> list[list]:
    rng = random.Random(seed)
    return [row(rng, i) for i in range(1, n + 1)]


def write_csv(name: str, header: list[str], rows: list[list], **options: str) -> None:
    encoding = options.pop("encoding", "utf-8")
    with open(HERE / name, "w", newline="", encoding=encoding) as out:
        writer = csv.writer(out, **options)  # type: ignore[arg-type]
        writer.writerow(header)
        writer.writerows(rows)


def salesforce() -> None:
    kinds = {"Call": "Call", "Email": "Email", "Meeting": "Task", "Other": "Task", "": "Task"}

    def row(rng: random.Random, i: int) -> list[object]:
        kind = rng.choice(list(kinds))
        created = when(rng)
        activity_date = "" if rng.random() < 0.2 else (created - timedelta(days=1)).date()
        return [
            f"00T5e00000{i:05d}AAA",
            f"003Dn{contact(rng):08d}QAA",
            f"001Dn{rng.randint(1, 99):08d}IAA",
            rng.choice(SUBJECTS),
            kind,
            kinds[kind],
            activity_date,
            "Completed",
            rng.choice(["Normal", "High"]),
            rng.choice(NOTES),
            "0055e000004ABCDAA1",
            created.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        ]

    header = "Id,WhoId,WhatId,Subject,Type,TaskSubtype,ActivityDate,Status,Priority,Description"
    rows = rows_of(120, 1501, row)
    rows[10][4] = "Fax"  # an unknown type (row 12)
    rows[20][6], rows[20][11] = "", ""  # no date at all (row 22): sent without one
    write_csv("salesforce-tasks.csv", [*header.split(","), "OwnerId", "CreatedDate"], rows)


def hubspot_de() -> None:
    kinds = ["Anruf", "E-Mail", "Meeting", "Notiz", "Aufgabe", "SMS"]
    book = Workbook()
    notes = book.active
    notes.title = "Hinweise"
    for line in ["Export aus HubSpot", "Zeitzone: Europe/Berlin", "Bitte nicht bearbeiten"]:
        notes.append([line])
    sheet = book.create_sheet("Aktivitäten")
    sheet.append(["HubSpot-Export: Aktivitäten"])
    sheet.append(["Erstellt am 01.12.2026 von M. Keller"])
    header = ["Aktivitäts-ID", "Kontakt", "Vorname", "Nachname", "Typ", "Datum", "Betreff"]
    sheet.append([*header, "Notiz", "Zuständig"])
    rng = random.Random(1502)
    for i in range(1, 151):
        sheet.append(
            [
                9_000_000 + i,
                f"c{contact(rng) - 10000}@example.org",
                rng.choice(["Anna", "Jonas", "Lea", "Felix"]),
                rng.choice(["Müller", "Schmidt", "Weber", "Wagner"]),
                rng.choice(kinds),
                when(rng).strftime("%d.%m.%Y %H:%M"),
                rng.choice(["Dankeschön", "Rückfrage", "Einladung", "Spendenquittung"]),
                rng.choice(["Sehr freundlich.", "Möchte Newsletter.", "", "Rückruf erbeten."]),
                rng.choice(["M. Keller", "S. Braun"]),
            ]
        )
    sheet["E20"] = "Brieftaube"  # row 20: an unknown type
    sheet["F30"] = "31.02.2024 10:00"  # row 30: a day that does not exist
    book.save(HERE / "hubspot-aktivitaeten.xlsx")


def bloomerang() -> None:
    channels = ["Email", "Phone", "Text Message", "Mail", "In Person", "Video Call", "Other"]

    def row(rng: random.Random, i: int) -> list[object]:
        day = when(rng, hours=False)
        return [
            1_048_000 + contact(rng) - 10000,
            rng.choice(["Ana Silva", "Ben Okafor", "Chen Li"]),
            f"{day.month}/{day.day}/{day.year}",
            rng.choice(channels),
            rng.choice(["Stewardship", "Solicitation", "Cultivation"]),
            rng.choice(SUBJECTS),
            rng.choice(NOTES),
            rng.choice(["True", "False"]),
            rng.choice(["Jo Park", "Sam Reyes"]),
        ]

    header = "Account Number,Name,Date,Channel,Purpose,Subject,Note,Is Inbound,Created By"
    rows = rows_of(100, 1503, row)
    rows[7][3] = "Carrier Pigeon"  # row 9
    write_csv("bloomerang-interactions.csv", header.split(","), rows)


def donorperfect() -> None:
    codes = ["CALL", "EMAIL", "MEETING", "LETTER", "THANK YOU CALL", "VISIT", "TEXT"]
    book = Workbook()
    sheet = book.active
    sheet.title = "Contacts"
    sheet.append(["DonorPerfect Online - Contact Records"])
    sheet.append(["Report: all contacts, FY2024"])
    sheet.append([])
    header = ["DONOR_ID", "FIRST_NAME", "LAST_NAME", "EMAIL", "CONTACT_DATE", "ACTIVITY_CODE"]
    sheet.append([*header, "MAILING_CODE", "BY_WHOM", "COMMENTS"])
    rng = random.Random(1504)
    for _ in range(1, 131):
        n = contact(rng) - 10000
        sheet.append(
            [
                50_000 + n,
                rng.choice(["Maria", "James", "Aisha"]),
                rng.choice(["Lopez", "Smith", "Khan"]),
                f"c{n}@example.org" if rng.random() > 0.1 else None,
                when(rng, hours=False),
                rng.choice(codes),
                rng.choice(["FY24SPRING", "FY24GALA", None]),
                rng.choice(["MK", "DL"]),
                rng.choice(NOTES) or None,
            ]
        )
    summary = book.create_sheet("Summary")
    summary.append(["Contacts", 130])
    book.save(HERE / "donorperfect-contacts.xlsx")


def lgl() -> None:
    methods = ["Phone call", "Email", "In person", "Letter", "Text message", "Video call"]

    def row(rng: random.Random, i: int) -> list[object]:
        return [
            f"{contact(rng) - 10000 + 700000}",
            rng.choice(["Dana Fox", "Eli Brandt", "Mo Haddad"]),
            when(rng, hours=False).strftime("%Y-%m-%d"),
            rng.choice(methods),
            rng.choice(SUBJECTS),
            rng.choice(NOTES),
            rng.choice(["Pat Lee", "Kim Cho"]),
        ]

    header = "LGL Constituent ID,Constituent Name,Contact Date,Contact Method,Summary,Notes"
    rows = rows_of(110, 1505, row)
    rows[40][2] = "last spring"  # row 42: not a date
    write_csv("lgl-contact-reports.csv", [*header.split(","), "Team Member"], rows)


def neon_fr() -> None:
    kinds = ["Appel", "Courriel", "Réunion", "Note", "Tâche", "SMS", "Bénévolat"]

    def row(rng: random.Random, i: int) -> list[object]:
        n = contact(rng) - 10000
        return [
            f"{n + 3000}",
            rng.choice(["Camille", "Louis", "Chloé"]),
            rng.choice(["Martin", "Bernard", "Dubois"]),
            f"c{n}@example.org",
            rng.choice(kinds),
            rng.choice(["Remerciements", "Relance", "Invitation au gala", "Reçu fiscal"]),
            when(rng).strftime("%d/%m/%Y %H:%M"),
            rng.choice(["Très intéressée.", "À rappeler en janvier.", "", "Don mensuel."]),
            "Annulé" if rng.random() < 0.05 else "Terminé",
        ]

    header = [
        "Identifiant du compte",
        "Prénom",
        "Nom",
        "Courriel",
        "Type d'activité",
        "Objet",
        "Date de l'activité",
        "Remarques",
        "Statut",
    ]
    write_csv(
        "neon-activites-fr.csv", header, rows_of(140, 1506, row), encoding="cp1252", delimiter=";"
    )


def blackbaud() -> None:
    categories = ["Phone call", "Meeting", "Email", "Mailing", "Task/Other"]
    book = Workbook()
    sheet = book.active
    sheet.title = "Actions"
    header = ["Constituent ID", "Name", "Email", "Action Date", "Category", "Action Type"]
    sheet.append([*header, "Summary", "Notes", "Status", "Fundraiser"])
    rng = random.Random(1507)
    for _ in range(1, 101):
        n = contact(rng) - 10000
        day = when(rng, hours=False)
        sheet.append(
            [
                f"{n + 80000}",
                rng.choice(["Rosa Diaz", "Tom Berg"]),
                f"c{n}@example.org",
                day.strftime("%m/%d/%Y"),
                rng.choice(categories),
                rng.choice(["Thank you", "Stewardship", "Solicitation", "Follow-up"]),
                rng.choice(SUBJECTS),
                rng.choice(NOTES),
                rng.choice(["Completed", "Open"]),
                rng.choice(["A. Gray", "B. Stone"]),
            ]
        )
    book.save(HERE / "blackbaud-actions.xlsx")


if __name__ == "__main__":
    for make in (salesforce, hubspot_de, bloomerang, donorperfect, lgl, neon_fr, blackbaud):
        make()
