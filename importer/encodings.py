"""Text encodings for delimited files: which one a file is in, and bytes checked as they stream.

Detection (when no encoding is named) looks at a sample from the start of the file:

    a byte-order mark       -> utf-8-sig, utf-16 (LE or BE) or utf-32
    NUL bytes, no BOM       -> not a text file (InputError)
    valid UTF-8             -> utf-8 (plain ASCII is UTF-8 too)
    else valid Windows-1252 -> cp1252, the encoding of old Windows exports (é, ’, €)
    else                    -> InputError: name the encoding

The sample cannot prove the rest of the file: `CheckedFile` validates every block the CSV
parser reads, so a NUL byte or a byte the chosen encoding cannot decode further on stops the
read with `BadBytes` naming its offset (the reader turns that into an InputError naming the
line). It never guesses a second encoding half-way through a file: a file that mixes
encodings is an error the user resolves by naming one.
"""

from __future__ import annotations

import codecs
import io
from pathlib import Path

from importer.errors import InputError

_BOMS = (  # longest first: the UTF-32 LE mark starts with the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_FALLBACK = "cp1252"
_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ASCII = bytes(range(128))


class BadBytes(Exception):
    """The byte at `offset` is a NUL byte, or starts a sequence `encoding` cannot decode."""

    def __init__(self, offset: int, byte: int, encoding: str) -> None:
        super().__init__(f"byte 0x{byte:02X} at offset {offset} is not {encoding} text")
        self.offset = offset
        self.byte = byte
        self.encoding = encoding


def choose_encoding(sample: bytes, *, at_eof: bool, named: str | None, source: str) -> str:
    """The codec name to read the file with: `named` (checked against the sample) or detected.

    `sample` is the start of the file (the whole file when `at_eof`); `source` names the file
    in error messages. Raises InputError for an unknown name, a sample the named encoding
    cannot decode, or a sample that is not text.
    """
    if named is not None:
        encoding = _known_encoding(named, source)
        decode_sample(sample, encoding, at_eof=at_eof, source=source)
        return encoding
    for bom, encoding in _BOMS:
        if sample.startswith(bom):
            return encoding
    if b"\x00" in sample:
        raise InputError(f"{source}: {_binary_description(sample)}")
    for encoding in ("utf-8", _FALLBACK):
        try:
            _decode(sample, encoding, at_eof=at_eof)
        except UnicodeDecodeError:
            continue
        return encoding
    raise InputError(
        f"{source}: is neither UTF-8 nor Windows-1252 (cp1252) text: name its encoding "
        "(source.encoding in the mapping)"
    )


def decode_sample(sample: bytes, encoding: str, *, at_eof: bool, source: str) -> str:
    """`sample` as text, without a leading byte-order mark; InputError if it does not decode.

    A multi-byte character cut off at the end of a partial sample is left out.
    """
    try:
        text = _decode(sample, encoding, at_eof=at_eof)
    except UnicodeDecodeError as error:
        line = sample.count(b"\n", 0, error.start) + 1
        raise InputError(
            f"{source}: line {line} is not valid {encoding} "
            f"(byte 0x{sample[error.start]:02X} at offset {error.start}): "
            "name the file's encoding (source.encoding in the mapping)"
        ) from None
    return text.removeprefix("\ufeff")


def is_ascii_compatible(encoding: str) -> bool:
    """Whether ASCII bytes mean ASCII characters in `encoding` (true of UTF-8 and cp1252)."""
    try:
        return _ASCII.decode(encoding) == _ASCII.decode("ascii")
    except UnicodeDecodeError:
        return False


def line_at(path: Path, offset: int) -> int:
    """The 1-based line number (counting line feeds) of the byte at `offset` in `path`."""
    lines, done = 1, 0
    with open(path, "rb") as file:
        while done < offset:
            block = file.read(min(1 << 20, offset - done))
            if not block:
                break
            lines += block.count(b"\n")
            done += len(block)
    return lines


class CheckedFile(io.FileIO):
    """A file opened for reading bytes, each block checked as it is read.

    For an ASCII-compatible encoding, `read` raises `BadBytes` at the first NUL byte or byte
    sequence that `encoding` cannot decode (an all-ASCII block costs one `isascii` scan). For
    UTF-16 and UTF-32, where NUL bytes are normal, blocks pass unchecked: their decoder, run by
    the CSV parser, raises UnicodeDecodeError itself. `offset` counts the bytes handed out.
    """

    def __init__(self, path: Path, encoding: str) -> None:
        super().__init__(path, "rb")
        self.offset = 0
        self._encoding = encoding
        self._decoder = (
            codecs.getincrementaldecoder(encoding)("strict")
            if is_ascii_compatible(encoding)
            else None
        )

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if data is None:  # only for non-blocking files, which a path never opens
            return b""
        if self._decoder is not None:
            self._check(data)
        self.offset += len(data)
        return data

    def _check(self, data: bytes) -> None:
        assert self._decoder is not None
        nul = data.find(b"\x00")
        if nul >= 0:
            raise BadBytes(self.offset + nul, 0, self._encoding)
        pending = self._decoder.getstate()[0]  # bytes of a character split across blocks
        if data.isascii() and not pending:
            return
        try:
            self._decoder.decode(data, final=not data)
        except UnicodeDecodeError as error:
            held = pending + data
            raise BadBytes(
                self.offset - len(pending) + error.start, held[error.start], self._encoding
            ) from None


def _known_encoding(name: str, source: str) -> str:
    try:
        info = codecs.lookup(name)
        "".encode(info.name)  # LookupError for a codec that is not a text encoding (base64)
    except LookupError:
        raise InputError(f"{source}: unknown encoding '{name}'") from None
    return info.name


def _decode(sample: bytes, encoding: str, *, at_eof: bool) -> str:
    return codecs.getincrementaldecoder(encoding)("strict").decode(sample, final=at_eof)


def _binary_description(sample: bytes) -> str:
    if sample.startswith(_ZIP_MAGIC):
        return "is a zip archive (an .xlsx or .ods workbook?), not CSV text: name it .xlsx"
    if sample.startswith(_OLE_MAGIC):
        return "is an Office file (an .xls workbook?), not CSV text: name it .xls"
    return (
        "contains NUL bytes: it is not a text file (or is UTF-16 without a byte-order "
        "mark: save it as UTF-8)"
    )
