"""A minimal, valid PDF written by hand: one A4 page of text lines in Helvetica.

Enough for an `invoice_pdf` link that opens in any viewer; the cross-reference table holds each
object's exact byte offset, as the PDF specification requires.
"""

from __future__ import annotations


def _escape(text: str) -> str:
    # PDF string literals: backslash, parentheses; the standard font takes Latin-1 only.
    text = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return text.encode("latin-1", "replace").decode("latin-1")


def text_pdf(lines: list[str], *, title: str = "Invoice") -> bytes:
    """Return a one-page PDF showing `lines` from the top of the page."""
    commands = ["BT", "/F1 11 Tf", "14 TL", "56 780 Td"]
    for index, line in enumerate(lines):
        if index == 0:
            commands += ["/F1 16 Tf", f"({_escape(line)}) Tj", "/F1 11 Tf", "T*", "T*"]
        else:
            commands += [f"({_escape(line)}) Tj", "T*"]
    commands.append("ET")
    stream = "\n".join(commands).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Title (%s) /Producer (stripesim) >>" % _escape(title).encode("latin-1"),
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n" % (len(objects) + 1)
    out += b"0000000000 65535 f \n"
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\n" % (len(objects) + 1, len(objects))
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)
