"""A small multipart/form-data parser, so the fake server needs no python-multipart."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data."""


@dataclass(frozen=True)
class UploadedFile:
    """One uploaded file part: its form-supplied name, content type and exact bytes."""

    filename: str
    content_type: str
    data: bytes


def _params(header_name: str, value: str) -> Message:
    # email.message knows RFC 2045/2231 parameter quoting, which hand parsing would get wrong.
    message = Message()
    message[header_name] = value
    return message


def parse_form(body: bytes, content_type: str) -> tuple[dict[str, str], dict[str, UploadedFile]]:
    """Split a multipart/form-data body into text fields and file parts, bytes untouched."""
    header = _params("content-type", content_type)
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/form-data" or not isinstance(boundary, str):
        raise MultipartError("expected multipart/form-data with a boundary")
    # Every delimiter is CRLF "--" boundary; a leading CRLF lets the first one match too.
    sections = (b"\r\n" + body).split(b"\r\n--" + boundary.encode("latin-1"))
    if len(sections) < 3 or not sections[-1].startswith(b"--"):
        raise MultipartError("multipart body has no closing delimiter")
    fields: dict[str, str] = {}
    files: dict[str, UploadedFile] = {}
    for section in sections[1:-1]:
        _, newline, part = section.partition(b"\r\n")
        head, blank, data = part.partition(b"\r\n\r\n")
        if not newline or not blank:
            raise MultipartError("malformed multipart part")
        headers = _part_headers(head.decode("utf-8", "replace"))
        disposition = _params("content-disposition", headers.get("content-disposition", ""))
        name = disposition.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise MultipartError("multipart part without a name")
        filename = disposition.get_filename()
        if filename is None:
            fields[name] = data.decode("utf-8")
        else:
            kind = headers.get("content-type", "application/octet-stream")
            files[name] = UploadedFile(filename=filename, content_type=kind, data=data)
    return fields, files


def _part_headers(head: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in head.split("\r\n"):
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return headers
