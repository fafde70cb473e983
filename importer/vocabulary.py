"""The words of other CRMs' exports, for `init`'s guesses: a data table, not code.

`COLUMN_NAMES` lists, for each part of a mapping, the column names that the usual exports
give it — Salesforce, HubSpot, Bloomerang, DonorPerfect, Little Green Light, Neon,
Blackbaud (Raiser's Edge NXT), Mailchimp — and the same words in German, French, Spanish
and Dutch. `TYPE_WORDS` lists the values those exports write for an activity's kind,
with the Givebutter type each means. `CANCELLED_WORDS` are statuses of rows that did not
happen. Every name is written as `normalize` gives it: lower case, no accents, words
split at punctuation and at camelCase (`ActivityDate` → `activity date`).

Within a part, earlier rows are preferred: the specific name (`activity date`) before the
generic one (`date`), the activity's own date before the record's creation date.
"""

from __future__ import annotations

import re
import unicodedata

from importer.payload import ActivityType

# (part, language, names). Parts: id (a Givebutter contact id), email, external_id (the
# old system's record id), type, occurred_at, created_at (a fallback date), subject, note,
# status. Languages: en, de, fr, es, nl ("any" for names that are the same in all).
COLUMN_NAMES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("id", "any", ("givebutter contact id", "givebutter id", "gb contact id", "gb id")),
    ("id", "any", ("givebutter contact", "givebutter kontakt id", "givebutter contact number")),
    # Email: Mailchimp "Email Address", Neon "Email 1", HubSpot/Salesforce "Email".
    ("email", "en", ("email", "email address", "e mail", "e mail address", "emailaddress")),
    ("email", "en", ("primary email", "primary email address", "contact email", "email 1")),
    ("email", "en", ("preferred email", "personal email", "contact email address")),
    ("email", "en", ("constituent email", "email address 1", "primary e mail")),
    ("email", "de", ("e mail adresse", "emailadresse", "mailadresse", "kontakt e mail")),
    ("email", "fr", ("courriel", "adresse courriel", "adresse e mail", "e mail du contact")),
    ("email", "es", ("correo", "correo electronico", "email del contacto", "correo del contacto")),
    ("email", "nl", ("e mailadres", "emailadres", "mailadres")),
    # The old system's ids: Salesforce WhoId/ContactId, HubSpot Record ID, Bloomerang
    # Account Number, DonorPerfect DONOR_ID, LGL Constituent ID, Neon Account ID,
    # Blackbaud Constituent ID / Lookup ID.
    ("external_id", "en", ("who id", "contact id", "account id", "record id", "contact record id")),
    ("external_id", "en", ("associated contact id", "account number", "constituent id")),
    ("external_id", "en", ("donor id", "lgl constituent id", "lgl id", "neon id", "lookup id")),
    ("external_id", "en", ("constituent lookup id", "system record id", "external id")),
    ("external_id", "en", ("legacy id", "crm id", "donor number", "supporter id", "member id")),
    ("external_id", "de", ("kontakt id", "datensatz id", "spender id", "spendernummer")),
    ("external_id", "de", ("kundennummer", "kontaktnummer", "mitgliedsnummer")),
    ("external_id", "fr", ("identifiant", "id du contact", "identifiant du contact")),
    ("external_id", "fr", ("identifiant du compte", "numero de donateur", "id donateur")),
    ("external_id", "es", ("id de contacto", "id del contacto", "id donante", "numero de donante")),
    ("external_id", "es", ("id de cuenta", "numero de cuenta")),
    ("external_id", "nl", ("relatienummer", "relatie id", "donateurnummer", "contactnummer")),
    # What kind of activity: Salesforce Type/TaskSubtype, HubSpot Activity type, Bloomerang
    # Channel, DonorPerfect ACTIVITY_CODE, LGL Contact type, Blackbaud Action type/Category.
    ("type", "en", ("activity type", "interaction type", "engagement type", "type")),
    ("type", "en", ("task subtype", "subtype", "channel", "contact type", "action type")),
    ("type", "en", ("communication type", "activity code", "contact method", "method")),
    ("type", "en", ("note type", "report type", "action category", "category", "kind")),
    ("type", "de", ("typ", "aktivitatstyp", "aktivitatsart", "art", "kanal", "kontaktart")),
    ("type", "fr", ("type d activite", "type de contact", "canal", "nature", "type d interaction")),
    (
        "type",
        "es",
        ("tipo", "tipo de actividad", "tipo de contacto", "canal", "tipo de interaccion"),
    ),
    ("type", "nl", ("soort", "activiteitstype", "type activiteit", "kanaal", "contactsoort")),
    # When: the activity's own date first.
    ("occurred_at", "en", ("activity date", "interaction date", "contact date", "action date")),
    ("occurred_at", "en", ("occurred at", "note date", "report date", "activity timestamp")),
    ("occurred_at", "en", ("date", "date time", "datetime", "timestamp", "completed date")),
    ("occurred_at", "en", ("activity date time", "start date", "start time", "when")),
    (
        "occurred_at",
        "de",
        ("datum", "aktivitatsdatum", "kontaktdatum", "zeitpunkt", "datum uhrzeit"),
    ),
    ("occurred_at", "fr", ("date de l activite", "date d activite", "date du contact", "date")),
    (
        "occurred_at",
        "es",
        ("fecha", "fecha de actividad", "fecha de la actividad", "fecha de contacto"),
    ),
    ("occurred_at", "nl", ("activiteitsdatum", "datum activiteit", "contactdatum", "datum")),
    # A record's creation date: the fallback where the activity's own date is blank.
    ("created_at", "en", ("created date", "create date", "date created", "created", "created at")),
    ("created_at", "de", ("erstellt am", "erstelldatum", "angelegt am")),
    ("created_at", "fr", ("cree le", "date de creation")),
    ("created_at", "es", ("fecha de creacion", "creado el")),
    ("created_at", "nl", ("aangemaakt op", "aanmaakdatum")),
    # Subject: HubSpot Activity subject / Call title, Neon Activity Subject, Blackbaud
    # Summary, Mailchimp Campaign Title.
    ("subject", "en", ("subject", "activity subject", "title", "summary", "action summary")),
    ("subject", "en", ("call title", "meeting name", "email subject", "subject line")),
    ("subject", "en", ("campaign title", "campaign name", "activity name", "purpose")),
    ("subject", "de", ("betreff", "titel", "thema", "zusammenfassung")),
    ("subject", "fr", ("objet", "sujet", "titre", "resume")),
    ("subject", "es", ("asunto", "titulo", "tema", "resumen")),
    ("subject", "nl", ("onderwerp", "titel", "samenvatting")),
    # The note.
    ("note", "en", ("note", "notes", "description", "comments", "comment", "body", "details")),
    ("note", "en", ("activity note", "activity notes", "contact note", "action notes")),
    ("note", "en", ("call notes", "meeting notes", "email body", "narrative", "remarks")),
    ("note", "en", ("content", "note text", "text")),
    ("note", "de", ("notiz", "notizen", "beschreibung", "kommentar", "bemerkung", "inhalt")),
    ("note", "fr", ("remarque", "remarques", "commentaire", "commentaires", "contenu", "note")),
    ("note", "es", ("nota", "notas", "descripcion", "comentario", "comentarios", "observaciones")),
    ("note", "nl", ("notitie", "notities", "opmerking", "opmerkingen", "omschrijving", "inhoud")),
    ("status", "en", ("status", "state", "activity status", "task status")),
    ("status", "de", ("status", "zustand")),
    ("status", "fr", ("statut", "etat")),
    ("status", "es", ("estado",)),
    ("status", "nl", ("status", "staat")),
)

# The values exports write for an activity's kind, in each language. A value is matched
# whole first, then by the longest of these that it contains as whole words.
TYPE_WORDS: dict[ActivityType, tuple[str, ...]] = {
    ActivityType.PHONE_CALL: (
        *("call", "phone", "phone call", "telephone", "log a call", "voicemail", "calls"),
        *("outbound call", "inbound call", "left message", "anruf", "telefon", "telefonat"),
        *("appel", "appel telephonique", "llamada", "llamada telefonica", "telefono"),
        *("telefoongesprek", "telefoon", "gebeld", "telefonisch"),
    ),
    ActivityType.EMAIL: (
        *("email", "e mail", "list email", "mass email", "email sent", "courriel", "correo"),
        *("correo electronico", "e mail versendet"),
    ),
    ActivityType.MEETING: (
        *("meeting", "in person", "visit", "site visit", "lunch", "event", "video call", "zoom"),
        *("termin", "treffen", "besuch", "besprechung", "reunion", "rendez vous", "visite"),
        *("visita", "cita", "vergadering", "afspraak", "bezoek", "ontmoeting"),
    ),
    ActivityType.SMS: (
        *("sms", "text", "text message", "texto", "mensaje de texto", "whatsapp"),
        *("textnachricht", "sms verstuurd"),
    ),
    ActivityType.COMPLETED_TASK: ("task", "to do", "todo", "aufgabe", "tache", "tarea", "taak"),
    ActivityType.VOLUNTEER_ACTIVITY: (
        *("volunteer", "volunteer shift", "shift", "volunteering", "ehrenamt", "freiwillig"),
        *("freiwilligenarbeit", "benevolat", "benevole", "voluntariado", "voluntario"),
        *("vrijwilligerswerk", "vrijwilliger"),
    ),
    # Postal mail, letters and "other" carry no type of their own in Givebutter: notes.
    ActivityType.NOTE: (
        *("note", "notes", "notiz", "nota", "notitie", "other", "sonstiges", "autre", "otro"),
        *("overig", "letter", "mail", "mailing", "brief", "lettre", "carta", "social media"),
        *("website", "general"),
    ),
}

CANCELLED_WORDS = (
    *("cancelled", "canceled", "deleted", "void", "storniert", "abgesagt", "geloscht"),
    *("annule", "annulee", "cancelado", "cancelada", "anulado", "geannuleerd"),
)

# The timezone an export in a language was most likely written in (a guess, always marked
# for checking; English says nothing, Spanish little).
LANGUAGE_ZONES = {
    "de": ("Europe/Berlin", "medium"),
    "fr": ("Europe/Paris", "medium"),
    "nl": ("Europe/Amsterdam", "medium"),
    "es": ("Europe/Madrid", "low"),
}
LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French", "es": "Spanish", "nl": "Dutch"}
DAY_FIRST_LANGUAGES = frozenset({"de", "fr", "es", "nl"})

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NOT_WORD = re.compile(r"[^0-9a-z]+")


def normalize(text: str) -> str:
    """A name or value as the tables write it: `Aktivitäts-Typ` → `aktivitats typ`."""
    split = _CAMEL.sub(" ", text)
    plain = unicodedata.normalize("NFKD", split)
    plain = "".join(ch for ch in plain if not unicodedata.combining(ch)).casefold()
    plain = plain.replace("ß", "ss")
    return " ".join(_NOT_WORD.sub(" ", plain).split())
