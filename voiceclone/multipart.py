"""A multipart/form-data upload body that streams the sample instead of copying it (pure).

`requests` builds `files=` uploads by concatenating everything into one new bytes object: for a
10 MB sample that is a second 10 MB per in-flight call. This body is a small file-like object over
the form fields, a view of the sample and the closing boundary, with a known length (so the
request carries `Content-Length`, as ElevenLabs' API expects) and rewindable for retries.
"""

from __future__ import annotations

import secrets


class MultipartBody:
    def __init__(self, fields: dict[str, str], file_field: str, filename: str, mime_type: str, data: bytes) -> None:
        self.boundary = secrets.token_hex(16)
        head = b"".join(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quoted(name)}"\r\n\r\n'.encode() + value.encode() + b"\r\n"
            for name, value in fields.items()
        )
        head += (f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quoted(file_field)}"; '
                 f'filename="{_quoted(filename)}"\r\nContent-Type: {mime_type}\r\n\r\n').encode()
        self._parts = (memoryview(head), memoryview(data), memoryview(f"\r\n--{self.boundary}--\r\n".encode()))
        self._length = sum(len(part) for part in self._parts)
        self._position = 0

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return self._length

    def seek(self, offset: int, whence: int = 0) -> int:
        """Rewind (for a retry); only absolute positions are needed."""
        if whence != 0:
            raise OSError("only absolute seeks are supported")
        self._position = max(0, min(offset, self._length))
        return self._position

    def tell(self) -> int:
        return self._position

    def read(self, size: int = -1) -> bytes:
        end = self._length if size is None or size < 0 else min(self._length, self._position + size)
        chunks = []
        start = 0
        for part in self._parts:
            stop = start + len(part)
            if self._position < stop and end > start:
                chunks.append(part[max(0, self._position - start): min(len(part), end - start)])
            start = stop
        self._position = end
        return b"".join(chunks)


def _quoted(value: str) -> str:
    """Field names and filenames as browsers quote them (no raw quotes or line breaks)."""
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
