#!/usr/bin/env python3
"""Prints a JSON manifest of pydicom's bundled test files for vna's tests.

For each regular file: its path, whether pydicom reads it as a Part-10 file with the
identifiers an archive needs (then vna must accept it), its transfer syntax and its
SOP Instance UID. No network access: only the files shipped in the pydicom wheel.
"""
import json
import os
import re
import sys
import warnings

warnings.simplefilter("ignore")
try:
    import pydicom
    from pydicom.data import get_testdata_files
except ImportError:
    sys.exit("pydicom is not installed: run `pip install -r testdata/requirements.txt`")

UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def valid_uid(v):
    return isinstance(v, str) and 0 < len(v) <= 64 and UID.match(v) is not None


# pydicom ships these as deliberately broken: an archive must refuse them (or may accept
# them if it can), never has to take them.
DELIBERATELY_BROKEN = ("truncated", "bad", "invalid", "no_meta", "nested_priv_SQ", "emri_small_jpeg_2k_lossless_too_short")


def describe(path):
    entry = {"path": path, "acceptable": False, "transfer_syntax": None, "sop_instance": None}
    try:
        with open(path, "rb") as f:
            head = f.read(132)
        if len(head) < 132 or head[128:132] != b"DICM":
            return entry
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path, stop_before_pixels=False)
        # A file whose encoding contradicts its transfer syntax is malformed.
        if any("Expected explicit VR, but found implicit VR" in str(w.message) for w in caught):
            return entry
        if any(word.lower() in os.path.basename(path).lower() for word in DELIBERATELY_BROKEN):
            return entry
        meta = ds.file_meta
        ts = str(meta.get("TransferSyntaxUID", ""))
        entry["transfer_syntax"] = ts or None
        sop = str(ds.get("SOPInstanceUID", ""))
        entry["sop_instance"] = sop or None
        ok = all(valid_uid(str(ds.get(k, ""))) for k in
                 ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID"))
        entry["acceptable"] = bool(ok and valid_uid(ts))
    except Exception:
        pass
    return entry


files = sorted(p for p in get_testdata_files() if os.path.isfile(p))
print(json.dumps([describe(p) for p in files], indent=1))
