"""Layer 3: checkpoints, one file holding a JSON header and NumPy arrays, written atomically.

Format (``format_version`` 1)
-----------------------------
A checkpoint is a zip archive (stored, not compressed; every entry dated 1980-01-01 so that the
same payload always gives the same bytes) with these entries, in this order:

``bptt.json``
    UTF-8 JSON header::

        {"format": "bptt-checkpoint", "format_version": 1,
         "arrays": ["arrays/0.npy", "arrays/1.npy", ...],
         "payload": <the payload tree>}

    The payload tree is the caller's dict with every NumPy array replaced by
    ``{"__bptt_array__": "arrays/<n>.npy"}``, every NumPy scalar by
    ``{"__bptt_array__": ..., "scalar": true}`` and every tuple by ``{"__bptt_tuple__": [...]}``.
    Everything else is plain JSON: dicts with string keys, lists, str, int (of any size, e.g. an
    RNG state), float (NaN and ±Infinity as Python's ``json`` writes them), bool, None.
``arrays/<n>.npy``
    One array each in the ``.npy`` format (``numpy.lib.format``, version 1.0 or later), with
    ``allow_pickle=False``: dtype, shape, memory order and bytes are kept exactly. Object arrays
    are refused, and nothing is ever unpickled.
``checksum.sha256``
    The hex SHA-256, then a newline, of every preceding entry in order, each fed to the hash as
    ``name`` (UTF-8), a NUL byte, the length of the data as 8 little-endian bytes, and the data.

Together with the zip CRC-32 of each entry, the checksum detects a truncated or corrupted file.
Because it is an ordinary zip of ``.npy`` files, ``numpy.load`` and ``unzip`` can inspect it.

A training checkpoint's payload, by convention: ``{'config': {...}, 'tokenizer': tok.to_dict(),
'step': int, 'metadata': {...}, 'model': model.parameters(), 'optim': opt.state_dict(),
'rng': generator.bit_generator.state, 'batcher': batcher.state_dict()}``.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import stat
import struct
import tempfile
import zipfile
import zlib

import numpy as np

__all__ = ["CheckpointError", "FORMAT_NAME", "FORMAT_VERSION", "save_checkpoint", "load_checkpoint",
           "check_output_folder", "check_output_file"]

FORMAT_NAME = "bptt-checkpoint"
FORMAT_VERSION = 1
HEADER = "bptt.json"
CHECKSUM = "checksum.sha256"
_ARRAY = "__bptt_array__"
_TUPLE = "__bptt_tuple__"
_DATE = (1980, 1, 1, 0, 0, 0)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or written; the message is one line naming the file."""


# ---------------------------------------------------------------------------------------------
# payload <-> JSON tree + arrays
# ---------------------------------------------------------------------------------------------

def _encode(obj, where: str, arrays: list):
    if isinstance(obj, (np.ndarray, np.generic)):
        a = np.asarray(obj)
        if a.dtype.hasobject:
            raise ValueError(f"{where} is an array of Python objects (dtype {a.dtype}); checkpoints "
                             "store numeric arrays only")
        name = f"arrays/{len(arrays)}.npy"
        arrays.append((name, a))
        return {_ARRAY: name, "scalar": True} if isinstance(obj, np.generic) else {_ARRAY: name}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ValueError(f"{where} has the key {k!r}; checkpoint dict keys must be strings")
            if k.startswith("__bptt_"):
                raise ValueError(f"{where} has the key {k!r}; keys starting with '__bptt_' are reserved")
            out[k] = _encode(v, f"{where}[{k!r}]", arrays)
        return out
    if isinstance(obj, list):
        return [_encode(v, f"{where}[{i}]", arrays) for i, v in enumerate(obj)]
    if isinstance(obj, tuple):
        return {_TUPLE: [_encode(v, f"{where}[{i}]", arrays) for i, v in enumerate(obj)]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        if type(obj) not in (bool, int, float, str, type(None)):
            # a subclass (an IntEnum, ...) would come back as its base type
            base = next(t for t in (bool, int, float, str) if isinstance(obj, t))
            raise ValueError(f"{where} is a {type(obj).__name__}; store it as a plain {base.__name__}")
        return obj
    raise ValueError(f"{where} is a {type(obj).__name__}, which a checkpoint cannot store (it holds "
                     "dicts, lists, tuples, str, int, float, bool, None and numpy arrays)")


def _decode(obj, arrays: dict):
    if isinstance(obj, dict):
        if _ARRAY in obj:
            a = arrays[obj[_ARRAY]]
            return a[()] if obj.get("scalar") else a
        if _TUPLE in obj:
            return tuple(_decode(v, arrays) for v in obj[_TUPLE])
        return {k: _decode(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, arrays) for v in obj]
    return obj


def _digest(entries) -> str:
    h = hashlib.sha256()
    for name, data in entries:
        h.update(name.encode("utf-8") + b"\0" + struct.pack("<Q", len(data)))
        h.update(data)
    return h.hexdigest()


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, allow_pickle=False)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------

def _new_file_mode(path: str) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)   # keep the mode of the file we replace
    except OSError:
        mask = os.umask(0o022)
        os.umask(mask)
        return 0o666 & ~mask


def save_checkpoint(path, payload: dict) -> None:
    """Write ``payload`` (a dict; see the module docstring) to ``path`` atomically.

    The file is written to a temporary file in the same directory, flushed and fsync'ed, then
    renamed over ``path`` with ``os.replace``, so that ``path`` always holds either the previous
    checkpoint or the complete new one, never a partial file. On any failure the temporary file is
    removed. ValueError for a payload that cannot be stored (naming the offending entry);
    CheckpointError if the file cannot be written.
    """
    if not isinstance(payload, dict):
        raise ValueError(f"payload must be a dict, got {type(payload).__name__}")
    arrays: list = []
    tree = _encode(payload, "payload", arrays)
    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
              "arrays": [name for name, _ in arrays], "payload": tree}
    entries = [(HEADER, json.dumps(header, ensure_ascii=False, allow_nan=True).encode("utf-8"))]
    entries += [(name, _npy_bytes(a)) for name, a in arrays]
    entries.append((CHECKSUM, (_digest(entries) + "\n").encode("ascii")))

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CheckpointError(f"{path}: cannot write checkpoint, directory {directory} does not exist")
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a directory, cannot write a checkpoint there")
    mode = _new_file_mode(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot write checkpoint ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
                for name, data in entries:
                    info = zipfile.ZipInfo(name, date_time=_DATE)
                    info.external_attr = 0o644 << 16
                    zf.writestr(info, data, compress_type=zipfile.ZIP_STORED)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise CheckpointError(f"{path}: cannot write checkpoint ({e.strerror or e})") from None
        raise
    # make the rename itself durable (POSIX; not possible on every platform)
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def _first_existing(path: str) -> str:
    p = os.path.abspath(path)
    while not os.path.exists(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    return p


# What each kind of checkpoint is, for errors that name it.
CHECKPOINT_KINDS = {"lm": "a language model (`bptt train`)",
                    "contrastive": "a contrastive encoder (`bptt contrastive`)",
                    "text": "a text classifier (`bptt fit --text`)",
                    "table": "a table model (`bptt fit`)",
                    "sequence": "a sequence model (`bptt fit`)",
                    "forecast": "a forecaster (`bptt forecast`)"}


def checkpoint_kind(kind) -> str:
    """``a text classifier (`bptt fit --text`)``: what a checkpoint ``kind`` is, in words."""
    return CHECKPOINT_KINDS.get(kind, f"a checkpoint of kind {kind!r}")


def check_output_folder(folder) -> None:
    """ValueError (one line) unless ``folder`` is, or can be made as, a writable folder: checked
    before a run's work starts, so a bad ``--out`` fails at once, not at the first save."""
    folder = os.fspath(folder)
    base = _first_existing(folder)
    if not os.path.isdir(base):
        raise ValueError(f"--out {folder}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ValueError(f"--out {folder}: cannot write in {base} (permission denied)")


def check_output_file(path, option: str = "--out") -> None:
    """ValueError (one line, naming ``option``) unless a file can be written at ``path``: its
    folder exists and is writable, and ``path`` is not a folder. Checked before the work that
    makes the file."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{option} {path}: is a folder, expected a file name")
    if not os.path.isdir(folder):
        what = "is a file, not a folder" if os.path.exists(folder) else "does not exist"
        raise ValueError(f"{option} {path}: its folder {folder} {what}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: cannot write in {folder} (permission denied)")


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------

def _check_required(path: str, payload: dict, required) -> None:
    for key in required:
        node, seen = payload, []
        for part in key.split("."):
            if not isinstance(node, dict):
                raise CheckpointError(f"{path}: checkpoint entry {'.'.join(seen)!r} should be a dict, "
                                      f"not {type(node).__name__}")
            if part not in node:
                raise CheckpointError(f"{path}: checkpoint lacks the entry {key!r} (incomplete or "
                                      "not written by this kind of run)")
            node = node[part]
            seen.append(part)


def load_checkpoint(path, required=()) -> dict:
    """The payload saved by :func:`save_checkpoint`, with arrays bit-for-bit as they were saved.

    Raises :class:`CheckpointError` (a ValueError) with a one-line message naming the file if it
    is missing, is not a bptt checkpoint, is truncated or corrupt (zip structure, CRC-32 or SHA-256
    checksum), has a ``format_version`` other than the one this bptt reads, or lacks one of the
    ``required`` entries: keys of the payload, with dots for nested dicts (``"config.seq_len"``).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({e.strerror or e})") from None
    if not magic:
        raise CheckpointError(f"{path}: file is empty, not a bptt checkpoint")
    if magic != b"PK\x03\x04":
        raise CheckpointError(f"{path}: not a bptt checkpoint (unrecognised file format)")

    def corrupt(why: str):
        return CheckpointError(f"{path}: checkpoint is truncated or corrupt ({why})")

    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if HEADER not in names:
                raise CheckpointError(f"{path}: not a bptt checkpoint (no {HEADER} header in the archive)")
            raw = zf.read(HEADER)
            try:
                header = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise corrupt(f"{HEADER} is not valid JSON") from None
            if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
                raise CheckpointError(f"{path}: not a bptt checkpoint (format is not {FORMAT_NAME!r})")
            version = header.get("format_version")
            if version != FORMAT_VERSION:
                raise CheckpointError(f"{path}: checkpoint format version {version!r} is not supported; "
                                      f"this bptt reads format version {FORMAT_VERSION}")
            array_names = header.get("arrays")
            if not isinstance(array_names, list) or "payload" not in header:
                raise corrupt(f"{HEADER} lacks 'arrays' or 'payload'")
            missing = [n for n in array_names + [CHECKSUM] if n not in names]
            if missing:
                raise corrupt(f"missing entry {missing[0]}")
            entries = [(HEADER, raw)] + [(n, zf.read(n)) for n in array_names]
            stored = zf.read(CHECKSUM).decode("ascii", "replace").strip()
            if stored != _digest(entries):
                raise corrupt("SHA-256 checksum mismatch")
            arrays = {}
            for name, data in entries[1:]:
                try:
                    arrays[name] = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
                except (ValueError, EOFError, OSError) as e:
                    raise corrupt(f"bad array {name}: {e}") from None
            try:
                payload = _decode(header["payload"], arrays)
            except (KeyError, TypeError, IndexError) as e:
                raise corrupt(f"bad payload reference {e}") from None
            if not isinstance(payload, dict):
                raise corrupt(f"the payload is a {type(payload).__name__}, not a dict")
            _check_required(path, payload, required)
            return payload
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, struct.error, KeyError,
            NotImplementedError, ValueError) as e:
        raise corrupt(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    except OSError as e:
        if e.errno == errno.EINVAL:   # a seek to a bad offset read from the zip's directory
            raise corrupt(e.strerror or str(e)) from None
        raise CheckpointError(f"{path}: cannot read checkpoint ({e.strerror or e})") from None
