"""Hostile inputs for `POST /webhook`, made from real encodings, each with the answer it must get.

Audio cases start from the files of `tests/audio_fixtures.py` (espeak-ng speech encoded by ffmpeg)
or from real ffmpeg encodings made here, and change what a sender controls: codec tags, header
fields, chunk, tag and page sizes, codec headers. Payload cases break the JSON and multipart
envelopes; signature cases the header. Every case names the status and error code docs/api.md
require (never a 500, never a 200).

`build_corpus(fixtures, encodings(fixtures, workdir))` returns the cases. Run standalone to write
each body and a `manifest.json` (name, category, content type, status, error code, fixed signature
header) to a directory: `python tests/hostile_corpus.py DIR`.
"""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy

if not __package__:  # run as a script: the repository's root on the path, as under pytest
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import AGENT_ID, MAX_SAMPLE_BYTES  # noqa: E402

CATEGORIES = ("wav_codec", "wav_header", "wav_chunks", "mp3", "ogg", "quality_gate", "json", "multipart", "signature")


@dataclass(frozen=True)
class HostileCase:
    name: str
    category: str
    body: bytes  # unsigned: the sender signs it when it is sent, so the signature is always fresh
    content_type: str
    status: int
    error_code: str
    signature: str | None = None  # a fixed ElevenLabs-Signature header instead of a valid one


# --- WAV ----------------------------------------------------------------------------------------


def _chunk(chunk_id: bytes, payload: bytes, size: int | None = None) -> bytes:
    pad = b"\x00" if len(payload) % 2 else b""
    return chunk_id + struct.pack("<I", len(payload) if size is None else size) + payload + pad


def _riff(*chunks: bytes, magic: bytes = b"RIFF") -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return magic + struct.pack("<I", len(body)) + body


def _fmt(tag: int = 1, channels: int = 1, rate: int = 8000, bits: int = 16, block_align: int | None = None) -> bytes:
    align = channels * bits // 8 if block_align is None else block_align
    return _chunk(b"fmt ", struct.pack("<HHIIHH", tag, channels, rate, rate * align & 0xFFFFFFFF, align, bits))


def _patched_fmt(wav: bytes, **fields: int) -> bytes:
    """A real WAV with fmt fields replaced: tag, channels, rate, block_align, bits, subformat."""
    data = bytearray(wav)
    body = data.index(b"fmt ") + 8
    offsets = {"tag": ("<H", 0), "channels": ("<H", 2), "rate": ("<I", 4), "block_align": ("<H", 12),
               "bits": ("<H", 14), "subformat": ("<H", 24)}
    for name, value in fields.items():
        layout, offset = offsets[name]
        struct.pack_into(layout, data, body + offset, value)
    return bytes(data)


def _pcm_samples(wav: bytes) -> bytes:
    start = wav.index(b"data") + 8
    return wav[start:start + struct.unpack_from("<I", wav, start - 4)[0]]


def _wav_cases(fx: dict[str, bytes], encoded: dict[str, bytes]) -> Iterator[tuple[str, str, bytes, int, str]]:
    pcm16, wavex = fx["wav_pcm16"], fx["wav_pcm24_48k_stereo"]
    second = _pcm_samples(pcm16)[:22050 * 2]  # one second of the 22.05 kHz 16-bit mono speech
    # Codecs other than PCM, float, A-law and µ-law are refused from the header (ffmpeg decoded a
    # 16 KB WAV tagged WMA to 699 s / 400 MB, the 264 KB one to 6 GB).
    yield "wav_wma_tag_16k", "wav_codec", _patched_fmt(pcm16[:16384], tag=0x0161), 415, "UNSUPPORTED_AUDIO_FORMAT"
    yield "wav_wma_tag_264k", "wav_codec", _patched_fmt(pcm16, tag=0x0161), 415, "UNSUPPORTED_AUDIO_FORMAT"
    for tag in (0x0000, 0x0002, 0x0011, 0x0031, 0x0050, 0x0055, 0x0162, 0x0163, 0x00FF, 0x1600, 0x2000, 0xFFFF):
        yield f"wav_tag_{tag:04x}", "wav_codec", _patched_fmt(pcm16, tag=tag), 415, "UNSUPPORTED_AUDIO_FORMAT"
    for name in ("wav_adpcm_ms", "wav_adpcm_ima", "wav_gsm", "wav_mp3_inside"):
        yield f"{name}_real", "wav_codec", encoded[name], 415, "UNSUPPORTED_AUDIO_FORMAT"
    yield "wavex_adpcm_subformat", "wav_codec", _patched_fmt(wavex, subformat=0x0002), 415, "UNSUPPORTED_AUDIO_FORMAT"
    foreign_guid = bytearray(wavex)  # KSDATAFORMAT_SUBTYPE_AMBISONIC_B_FORMAT_PCM: not a plain PCM subformat
    guid_at = foreign_guid.index(b"fmt ") + 8 + 24
    foreign_guid[guid_at:guid_at + 16] = bytes.fromhex("01000000" "2107" "d311" "8644c8c1ca000000")
    yield "wavex_foreign_guid", "wav_codec", bytes(foreign_guid), 415, "UNSUPPORTED_AUDIO_FORMAT"

    # Implausible streams: 400 INVALID_AUDIO before libsndfile decodes anything.
    for name, fields in {"channels_0": {"channels": 0}, "rate_0": {"rate": 0}, "bits_0": {"bits": 0},
                         "block_align_0": {"block_align": 0}, "channels_9": {"channels": 9, "block_align": 18},
                         "rate_7999": {"rate": 7999}, "rate_192001": {"rate": 192001},
                         "rate_max": {"rate": 0xFFFFFFFF}}.items():
        yield f"wav_{name}", "wav_header", _patched_fmt(pcm16, **fields), 400, "INVALID_AUDIO"
    yield "wav_1hz_4_frames", "wav_header", _riff(_fmt(rate=1), _chunk(b"data", bytes(8))), 400, "INVALID_AUDIO"
    yield "wav_2000_channels_1hz", "wav_header", _riff(_fmt(channels=2000, rate=1), _chunk(b"data", bytes(12000))), \
        400, "INVALID_AUDIO"
    yield "wavex_channels_0", "wav_header", _patched_fmt(wavex, channels=0), 400, "INVALID_AUDIO"

    # Chunk structure: sizes that claim gigabytes, chunks in the wrong order, floods.
    info = b"INFO" + b"ISFT" + struct.pack("<I", 0x7FFFFFF0) + b"Lavf59.27.100\x00"
    yield "wav_list_info_claims_2gb", "wav_chunks", _riff(_fmt(), _chunk(b"LIST", info, size=len(info)),
                                                        _chunk(b"data", bytes(42))), 400, "SAMPLE_TOO_SHORT"
    yield "wav_list_claims_2gb", "wav_chunks", _riff(_fmt(), _chunk(b"LIST", b"INFO" + bytes(40), size=0x7FFFFFF0),
                                                   _chunk(b"data", second)), 400, "INVALID_AUDIO"
    yield "wav_fmt_claims_4gb", "wav_chunks", pcm16.replace(b"fmt \x10\x00\x00\x00", b"fmt \xff\xff\xff\xff", 1), \
        400, "INVALID_AUDIO"
    yield "wav_fmt_truncated", "wav_chunks", _riff(_chunk(b"fmt ", bytes(14)), _chunk(b"data", second)), 400, "INVALID_AUDIO"
    yield "wav_data_before_fmt", "wav_chunks", _riff(_chunk(b"data", _pcm_samples(pcm16)), _fmt(rate=22050)), \
        400, "INVALID_AUDIO"
    yield "wav_chunk_flood", "wav_chunks", _riff(*([_chunk(b"junk", b"")] * 100_000), _fmt(), _chunk(b"data", bytes(64000))), \
        400, "INVALID_AUDIO"
    yield "wav_riff_only", "wav_chunks", b"RIFF\x04\x00\x00\x00WAVE", 400, "INVALID_AUDIO"
    yield "wav_noise_after_riff", "wav_chunks", fx["wav_garbage"], 400, "INVALID_AUDIO"
    yield "wav_data_claims_60s", "wav_chunks", fx["wav_lying_header"], 400, "SAMPLE_TOO_SHORT"
    yield "wav_data_size_ffffffff", "wav_chunks", _riff(_fmt(rate=22050), _chunk(b"data", second, size=0xFFFFFFFF)), \
        400, "SAMPLE_TOO_SHORT"
    ds64 = _chunk(b"ds64", struct.pack("<QQQI", 2**62, 2**62, 2**61, 0))
    yield "rf64_ds64_claims_exabytes", "wav_chunks", _riff(ds64, _fmt(rate=22050), _chunk(b"data", second, size=0xFFFFFFFF),
                                                         magic=b"RF64"), 400, "SAMPLE_TOO_SHORT"


# --- MP3 ----------------------------------------------------------------------------------------


def _id3v2(payload: bytes) -> bytes:
    frame = b"TIT2" + struct.pack(">I", len(payload) + 1) + b"\x00\x00\x00" + payload
    size = len(frame)
    return b"ID3\x03\x00\x00" + bytes((size >> 21 & 0x7F, size >> 14 & 0x7F, size >> 7 & 0x7F, size & 0x7F)) + frame


def long_speech_mp3(frames: bytes) -> bytes:
    """Just under 10 MB of 32 kbit/s speech frames, about 43 minutes: valid, and far longer than
    anything the service should decode."""
    return frames * ((MAX_SAMPLE_BYTES - 4096) // len(frames))


def _mp3_cases(fx: dict[str, bytes], encoded: dict[str, bytes]) -> Iterator[tuple[str, str, bytes, int, str]]:
    # 43 minutes of speech behind an ID3 tag whose first size byte is corrupted: ffmpeg decoded all
    # of it (1.7 GB); the tag now claims 266 MB, past the end of the file.
    frames = encoded["mp3_32k_frames"]
    tag = bytearray(_id3v2(b"Voice sample"))
    tag[6] = 0x7F
    yield "mp3_10mb_corrupt_id3_size", "mp3", bytes(tag) + long_speech_mp3(frames), 400, "INVALID_AUDIO"
    yield "mp3_id3_then_noise", "mp3", fx["mp3_garbage"], 400, "INVALID_AUDIO"
    yield "mp3_1_5s_behind_1_5mb_id3", "mp3", fx["mp3_big_id3_short"], 400, "SAMPLE_TOO_SHORT"
    yield "mp3_truncated_xing_says_8s", "mp3", fx["mp3_truncated_info"], 400, "SAMPLE_TOO_SHORT"
    xing = bytearray(fx["mp3_cbr"][:8000])
    at = xing.find(b"Info")
    struct.pack_into(">II", xing, at + 4, 0x0F, 10**6)  # flags, then a million frames: 7 hours at 22.05 kHz
    yield "mp3_xing_claims_7_hours", "mp3", bytes(xing), 400, "SAMPLE_TOO_SHORT"
    yield "mp3_header_then_zeros", "mp3", frames[:4] + bytes(MAX_SAMPLE_BYTES - 4), 400, "INVALID_AUDIO"
    yield "mp3_free_format_then_noise", "mp3", b"\xff\xfb\x00\x00" + fx["wav_garbage"][12:], 400, "INVALID_AUDIO"
    tags = _id3v2(b"x") * ((MAX_SAMPLE_BYTES - 8000) // len(_id3v2(b"x")))
    yield "mp3_10mb_of_id3_tags", "mp3", tags + frames[:6000], 400, "INVALID_AUDIO"
    # Other codecs behind an ID3 tag are what libsndfile finds inside, not MP3.
    yield "mp3_layer2_behind_id3", "mp3", _id3v2(b"x") + encoded["mp2"], 415, "UNSUPPORTED_AUDIO_FORMAT"
    yield "mp3_flac_behind_id3", "mp3", _id3v2(b"x") + fx["flac"], 415, "UNSUPPORTED_AUDIO_FORMAT"


# --- Ogg ----------------------------------------------------------------------------------------


def _crc_entry(byte: int) -> int:
    crc = byte << 24
    for _ in range(8):
        crc = ((crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
    return crc


_CRC_TABLE = [_crc_entry(byte) for byte in range(256)]


def _ogg_crc(page: bytes) -> int:
    """Ogg's CRC-32 (polynomial 0x04C11DB7, no reflection), over the page with its CRC field zeroed."""
    crc = 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[(crc >> 24) ^ byte]
    return crc


def _ogg_pages(data: bytes) -> list[bytes]:
    pages, offset = [], 0
    while data[offset:offset + 4] == b"OggS" and offset + 27 <= len(data):
        segments = data[offset + 26]
        end = offset + 27 + segments + sum(data[offset + 27:offset + 27 + segments])
        if end > len(data):
            break
        pages.append(data[offset:end])
        offset = end
    return pages


def with_fresh_ogg_checksums(data: bytes) -> bytes:
    """Every whole page's CRC recomputed, so a mutation inside reaches the codec instead of being
    dropped by libogg; bytes after the last whole page are kept as they are."""
    out, offset = [], 0
    for page in _ogg_pages(data):
        blank = page[:22] + b"\x00\x00\x00\x00" + page[26:]
        out.append(page[:22] + struct.pack("<I", _ogg_crc(blank)) + page[26:])
        offset += len(page)
    return b"".join(out) + data[offset:]


def _ogg_page_with(page: bytes, packet: bytes | None = None, granule: int | None = None) -> bytes:
    """`page` with its granule position, or its content as one packet, replaced and its CRC
    recomputed, so the change reaches the codec instead of being dropped by libogg's checksum."""
    header, lacing, body = bytearray(page[:27]), page[27:27 + page[26]], page[27 + page[26]:]
    if packet is not None:
        lacing, body = bytes([255] * (len(packet) // 255) + [len(packet) % 255]), packet
        header[26] = len(lacing)
    if granule is not None:
        struct.pack_into("<q", header, 6, granule)
    struct.pack_into("<I", header, 22, 0)
    page = bytes(header) + lacing + body
    return page[:22] + struct.pack("<I", _ogg_crc(page)) + page[26:]


def _with_first_packet(ogg: bytes, edit: dict[int, int], extra: bytes = b"") -> bytes:
    pages = _ogg_pages(ogg)
    packet = bytearray(pages[0][27 + pages[0][26]:])
    for offset, value in edit.items():
        packet[offset] = value
    return _ogg_page_with(pages[0], bytes(packet) + extra) + b"".join(pages[1:])


def _ogg_cases(fx: dict[str, bytes]) -> Iterator[tuple[str, str, bytes, int, str]]:
    opus, vorbis = fx["ogg_opus"], fx["ogg_vorbis"]
    # OpusHead: version, channels (9), pre-skip (10-11), input rate (12-15), gain, mapping family (18).
    yield "opus_head_channels_0", "ogg", _with_first_packet(opus, {9: 0}), 400, "INVALID_AUDIO"
    yield "opus_head_channels_255_family_0", "ogg", _with_first_packet(opus, {9: 255}), 400, "INVALID_AUDIO"
    yield "opus_head_version_255", "ogg", _with_first_packet(opus, {8: 255}), 400, "INVALID_AUDIO"
    yield "opus_head_family_1_no_streams", "ogg", _with_first_packet(opus, {18: 1}, bytes([0, 0, 0])), 400, "INVALID_AUDIO"
    yield "opus_head_family_255_9_channels", "ogg", _with_first_packet(opus, {9: 9, 18: 255}, bytes([9, 0]) + bytes(range(9))), \
        400, "INVALID_AUDIO"
    # Vorbis identification header: channels (11), rate (12-15), blocksizes (28).
    yield "vorbis_ident_channels_0", "ogg", _with_first_packet(vorbis, {11: 0}), 400, "INVALID_AUDIO"
    yield "vorbis_ident_rate_0", "ogg", _with_first_packet(vorbis, {12: 0, 13: 0, 14: 0, 15: 0}), 400, "INVALID_AUDIO"
    yield "vorbis_ident_rate_1hz", "ogg", _with_first_packet(vorbis, {12: 1, 13: 0, 14: 0, 15: 0}), 400, "INVALID_AUDIO"
    yield "vorbis_ident_rate_4ghz", "ogg", _with_first_packet(vorbis, {12: 255, 13: 255, 14: 255, 15: 255}), \
        400, "INVALID_AUDIO"
    yield "vorbis_ident_channels_200", "ogg", _with_first_packet(vorbis, {11: 200}), 400, "INVALID_AUDIO"
    yield "vorbis_ident_blocksizes_bad", "ogg", _with_first_packet(vorbis, {28: 0xFF}), 400, "INVALID_AUDIO"
    pages = _ogg_pages(vorbis)
    headers = b"".join(pages[:2])
    empty = _ogg_page_with(pages[2], b"", granule=-1)
    yield "ogg_empty_page_flood", "ogg", headers + empty * ((MAX_SAMPLE_BYTES - len(headers)) // len(empty)), \
        400, "INVALID_AUDIO"
    yield "ogg_bad_checksums", "ogg", b"".join(p[:22] + b"\x00\x00\x00\x00" + p[26:] for p in pages), 400, "INVALID_AUDIO"
    opus_pages = _ogg_pages(opus)
    one_second = b"".join(opus_pages[:4])
    yield "opus_granule_claims_ages", "ogg", one_second + _ogg_page_with(opus_pages[4], granule=2**62), \
        400, "SAMPLE_TOO_SHORT"
    yield "ogg_noise_after_header", "ogg", fx["ogg_garbage"], 400, "INVALID_AUDIO"
    yield "ogg_flac", "ogg", fx["ogg_flac"], 415, "UNSUPPORTED_AUDIO_FORMAT"
    speex = _ogg_page_with(pages[0], b"Speex   1.2.1" + bytes(67))
    yield "ogg_speex_head", "ogg", speex + b"".join(pages[1:]), 415, "UNSUPPORTED_AUDIO_FORMAT"


# --- Envelopes ----------------------------------------------------------------------------------


def _document(index: int, data: str) -> dict[str, object]:
    return {"conversation_id": f"conv_h{index}", "agent_id": AGENT_ID, "voice_sample": {"data": data}}


def _json_payloads(fx: dict[str, bytes]) -> Iterator[tuple[str, bytes, int, str]]:
    b64 = base64.b64encode(fx["mp3_cbr"]).decode()
    head = b'{"conversation_id": "conv_hj", "agent_id": "' + AGENT_ID.encode() + b'", '
    sample = b'"voice_sample": {"data": "' + b64.encode() + b'"}'
    nested = b'{"a": ' * 1000 + b"1" + b"}" * 1000
    yield "json_nested_1000_in_body", head + sample + b', "x": ' + b"[" * 1000 + b"]" * 1000 + b"}", 400, "INVALID_PAYLOAD"
    yield "json_nested_100000_in_body", head + b'"x": ' + b"[" * 100_000 + b"]" * 100_000 + b", " + sample + b"}", \
        400, "INVALID_PAYLOAD"
    yield "json_nested_caller_metadata", head + sample + b', "caller_metadata": {"name": ' + nested + b"}}", 400, "INVALID_PAYLOAD"
    yield "json_bracket_flood", b"[" * (8 * 1024 * 1024), 400, "INVALID_PAYLOAD"
    # The fast path's old marker placed by the sender under a later duplicate key: json.loads reads
    # that text, which is not base64, whatever the fast path would have made of the first value.
    yield "json_forged_sample_marker", head + b'"voice_sample": {"data": "' + b64.encode() \
        + b'", "data": "\\u0000precall-sample\\u0000"}}', 400, "INVALID_PAYLOAD"
    yield "json_duplicate_voice_sample", head + sample + b', "voice_sample": {"data": "!!"}}', 400, "INVALID_PAYLOAD"
    wrapped = "\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))
    yield "json_raw_newlines_in_data", head + b'"voice_sample": {"data": "' + wrapped.encode() + b'"}}', 400, "INVALID_PAYLOAD"
    for name, char in (("nul", b"\x00"), ("tab", b"\t"), ("escape", b"\x1b")):
        raw = b64.encode()[:400] + char + b64.encode()[400:]
        yield f"json_raw_{name}_in_data", head + b'"voice_sample": {"data": "' + raw + b'"}}', 400, "INVALID_PAYLOAD"
    yield "json_invalid_utf8_in_name", head + sample + b', "caller_metadata": {"name": "Iv\xffan"}}', 400, "INVALID_PAYLOAD"
    yield "json_integer_5000_digits", head + sample + b', "x": ' + b"7" * 5000 + b"}", 400, "INVALID_PAYLOAD"
    # A lone surrogate reached ElevenLabs (clone made, agent PATCHed), then failed the UTF-8 answer: 500.
    yield "json_lone_surrogate_name", head + sample + b', "caller_metadata": {"name": "\\udc80van"}}', 400, "INVALID_PAYLOAD"
    yield "json_lone_surrogate_dob", head + sample + b', "caller_metadata": {"date_of_birth": "\\ud800"}}', \
        400, "INVALID_PAYLOAD"
    yield "json_top_level_array", b"[" + sample[16:] + b"]", 400, "INVALID_PAYLOAD"
    over = base64.b64encode(bytes(MAX_SAMPLE_BYTES + 1)).decode()
    yield "json_sample_over_limit", json.dumps(_document(0, over)).encode(), 413, "SAMPLE_TOO_LARGE"


def _multipart(parts: list[tuple[str, bytes, str | None]], boundary: str = "hostile-boundary-7MA4YWxkTrZu0gW",
               close: bool = True) -> bytes:
    """Parts as (name, value, filename): a file part when a filename is given."""
    out = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        kind = "\r\nContent-Type: application/octet-stream" if filename else ""
        out += f"--{boundary}\r\nContent-Disposition: {disposition}{kind}\r\n\r\n".encode() + value + b"\r\n"
    return out + (f"--{boundary}--\r\n".encode() if close else b"")


def _multipart_payloads(fx: dict[str, bytes]) -> Iterator[tuple[str, bytes, str, int, str]]:
    ct = "multipart/form-data; boundary=hostile-boundary-7MA4YWxkTrZu0gW"
    ids = [("conversation_id", b"conv_hm", None), ("agent_id", AGENT_ID.encode(), None)]
    sample = [("voice_sample", fx["mp3_cbr"], "sample.mp3")]
    yield "multipart_65_parts", _multipart(ids + [(f"f{i}", b"x", None) for i in range(63)] + sample), ct, 400, "INVALID_PAYLOAD"
    yield "multipart_5000_parts", _multipart(ids + [("f", b"", None)] * 5000 + sample), ct, 400, "INVALID_PAYLOAD"
    yield "multipart_text_part_over_1mib", _multipart(ids + [("caller_name", b"a" * (1024 * 1024 + 1), None)] + sample), ct, \
        400, "INVALID_PAYLOAD"
    yield "multipart_no_boundary_in_2mib", b"x" * (2 * 1024 * 1024), ct, 400, "INVALID_PAYLOAD"
    yield "multipart_unterminated", _multipart(ids + sample, close=False)[:-2], ct, 400, "INVALID_PAYLOAD"
    no_disposition = b"--hostile-boundary-7MA4YWxkTrZu0gW\r\nContent-Type: text/plain\r\n\r\nx\r\n--hostile-boundary-7MA4YWxkTrZu0gW--\r\n"
    yield "multipart_part_without_disposition", no_disposition, ct, 400, "INVALID_PAYLOAD"
    body = _multipart(ids + sample, boundary="\u20ac".encode().decode("latin-1"))
    yield "multipart_boundary_rfc2231_utf8", body, "multipart/form-data; boundary*=utf-8''%E2%82%AC", 400, "INVALID_PAYLOAD"
    long_boundary = "b" * 71
    yield "multipart_boundary_71_chars", _multipart(ids + sample, boundary=long_boundary), \
        f"multipart/form-data; boundary={long_boundary}", 400, "INVALID_PAYLOAD"
    yield "multipart_boundary_empty", _multipart(ids + sample), 'multipart/form-data; boundary=""', 400, "INVALID_PAYLOAD"
    nested = b'{"name": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    yield "multipart_nested_caller_metadata", _multipart(ids + [("caller_metadata", nested, None)] + sample), ct, \
        400, "INVALID_PAYLOAD"
    yield "multipart_caller_metadata_5000_digits", _multipart(ids + [("caller_metadata", b'{"n": ' + b"9" * 5000 + b"}", None)]
                                                             + sample), ct, 400, "INVALID_PAYLOAD"
    yield "multipart_sample_over_limit", _multipart(ids + [("voice_sample", bytes(MAX_SAMPLE_BYTES + 1), "big.wav")]), ct, \
        413, "SAMPLE_TOO_LARGE"
    yield "multipart_wma_wav", _multipart(ids + [("voice_sample", _patched_fmt(fx["wav_pcm16"], tag=0x0161), "a.wav")]), ct, \
        415, "UNSUPPORTED_AUDIO_FORMAT"


# --- Assembly -----------------------------------------------------------------------------------


def _ffmpeg(source: Path, out: Path, *args: str) -> bytes:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(source), *args, str(out)], check=True)
    return out.read_bytes()


def encodings(fixtures: dict[str, Path], workdir: Path) -> dict[str, bytes]:
    """Real encodings the fixtures lack: codecs refused inside WAV, Layer II, plain 32 kbit/s frames."""
    workdir.mkdir(parents=True, exist_ok=True)
    speech, long_speech = fixtures["wav_pcm16"], fixtures["wav_20s"]
    return {
        "wav_adpcm_ms": _ffmpeg(speech, workdir / "adpcm_ms.wav", "-c:a", "adpcm_ms"),
        "wav_adpcm_ima": _ffmpeg(speech, workdir / "adpcm_ima.wav", "-c:a", "adpcm_ima_wav"),
        "wav_gsm": _ffmpeg(speech, workdir / "gsm.wav", "-ar", "8000", "-c:a", "gsm_ms"),
        "wav_mp3_inside": _ffmpeg(speech, workdir / "mp3_inside.wav", "-c:a", "libmp3lame", "-f", "wav"),
        "mp2": _ffmpeg(speech, workdir / "layer2.mp2", "-c:a", "mp2"),
        "mp3_32k_frames": _ffmpeg(long_speech, workdir / "frames_32k.mp3", "-c:a", "libmp3lame", "-b:a", "32k",
                                  "-id3v2_version", "0", "-write_xing", "0"),
        "mp3_music_frames": _ffmpeg(fixtures["hold_music"], workdir / "music.mp3", "-c:a", "libmp3lame", "-b:a", "128k",
                                    "-id3v2_version", "0", "-write_xing", "0"),
    }


def _quality_gate_cases(encoded: dict[str, bytes]) -> Iterator[tuple[str, str, bytes, int, str]]:
    """Valid containers that pass every check before the quality gate and make its measures work
    hardest: the most samples per second the service accepts, values no measure expects, and 10 MB of
    music. Each must be refused by the gate within the same bounds (422, the reasons in the body)."""
    rng = numpy.random.default_rng(9)
    floats = (rng.standard_normal(20 * 48000) * 1e30).astype(numpy.float32)
    floats[::7], floats[::11], floats[::13] = numpy.nan, numpy.inf, -numpy.inf
    yield ("wav_float_nan_inf_1e30_20s", "quality_gate", _riff(_fmt(tag=3, rate=48000, bits=32), _chunk(b"data", floats.tobytes())),
           422, "SAMPLE_QUALITY_TOO_LOW")
    noise = rng.integers(-3000, 3000, size=(MAX_SAMPLE_BYTES - 65536) // 2, dtype=numpy.int16)
    yield ("wav_pcm16_192khz_noise_26s", "quality_gate", _riff(_fmt(rate=192000, bits=16), _chunk(b"data", noise.tobytes())),
           422, "SAMPLE_QUALITY_TOO_LOW")
    yield ("wav_mulaw_192khz_8ch_noise", "quality_gate",
           _riff(_fmt(tag=7, channels=8, rate=192000, bits=8), _chunk(b"data", noise.tobytes())), 422, "SAMPLE_QUALITY_TOO_LOW")
    frames = encoded["mp3_music_frames"]
    yield ("mp3_10mb_of_hold_music", "quality_gate", frames * ((MAX_SAMPLE_BYTES - 4096) // len(frames)), 422,
           "SAMPLE_QUALITY_TOO_LOW")


def build_corpus(fixtures: dict[str, Path], encoded: dict[str, bytes]) -> list[HostileCase]:
    """Every hostile case, from the files `tests/audio_fixtures.build_fixtures` made and `encodings`."""
    fx = {name: path.read_bytes() for name, path in fixtures.items()}
    cases: list[HostileCase] = []
    audio = [*_wav_cases(fx, encoded), *_mp3_cases(fx, encoded), *_ogg_cases(fx), *_quality_gate_cases(encoded)]
    for index, (name, category, sample, status, code) in enumerate(audio):
        body = json.dumps(_document(index, base64.b64encode(sample).decode())).encode()
        cases.append(HostileCase(name, category, body, "application/json", status, code))
    for name, body, status, code in _json_payloads(fx):
        cases.append(HostileCase(name, "json", body, "application/json", status, code))
    for name, body, content_type, status, code in _multipart_payloads(fx):
        cases.append(HostileCase(name, "multipart", body, content_type, status, code))
    empty = json.dumps(_document(0, "")).encode()
    for digits in (4301, 5000):
        cases.append(HostileCase(f"signature_t_{digits}_digits", "signature", empty, "application/json", 401,
                                 "INVALID_SIGNATURE", signature=f"t={'1' * digits},v0={'0' * 64}"))
    return cases


def write_corpus(cases: list[HostileCase], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    manifest = []
    for case in cases:
        (directory / f"{case.name}.body").write_bytes(case.body)
        manifest.append({"name": case.name, "category": case.category, "content_type": case.content_type,
                         "status": case.status, "error_code": case.error_code, "signature": case.signature})
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    from tests.audio_fixtures import build_fixtures

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "hostile_corpus")
    fixture_files = build_fixtures(target / "fixtures")
    built = build_corpus(fixture_files, encodings(fixture_files, target / "encodings"))
    write_corpus(built, target)
    for case in built:
        print(f"{case.category:11} {case.status} {case.error_code:26} {len(case.body):>9}  {case.name}")
