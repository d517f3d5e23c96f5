#!/usr/bin/env python3
"""Checks vna's DICOMweb services with a real client (dicomweb-client) against pydicom.

Usage: dicomweb_check.py BASE_URL FILE...

The files must already be stored in the archive. For each file this script:
- finds it with QIDO-RS at the study, series and instance levels (dicomweb-client's searches),
- retrieves its metadata with WADO-RS and compares every attribute with pydicom's own
  DICOM JSON conversion of the file (values, VRs, sequences, person names, numbers; binary
  values byte for byte, fetching BulkDataURIs with the client),
- retrieves the instance with WADO-RS through the client and compares its data set with
  the file's,
- retrieves frame 1 when the file has pixel data and compares it with pydicom's.
It then stores two files with the client's STOW-RS (re-encoded by the client) and finds them.

Prints a JSON report; exits 1 when anything differs.
"""
import base64
import json
import math
import sys
import warnings

warnings.simplefilter("ignore")
import pydicom  # noqa: E402
from pydicom.encaps import generate_fragments  # noqa: E402
from dicomweb_client.api import DICOMwebClient  # noqa: E402

BINARY = {"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW"}


class Checker:
    def __init__(self, url):
        self.client = DICOMwebClient(url=url)
        self.client.set_http_retry_params(retry=False)
        self.mismatches = []
        self.elements = 0

    def differ(self, where, what, ours, theirs):
        if len(self.mismatches) < 200:
            self.mismatches.append({"where": where, "what": what, "vna": repr(ours)[:200], "pydicom": repr(theirs)[:200]})

    def our_bytes(self, el):
        if "InlineBinary" in el:
            return base64.b64decode(el["InlineBinary"])
        if "BulkDataURI" in el:
            return self.client.retrieve_bulkdata(el["BulkDataURI"])[0]
        return b""

    def compare_values(self, where, vr, ours, theirs):
        if vr in ("DS", "IS", "FL", "FD", "US", "SS", "UL", "SL", "UV", "SV"):
            if len(ours) != len(theirs):
                return self.differ(where, "value count", ours, theirs)
            for a, b in zip(ours, theirs):
                if a is None or b is None or b == "":
                    if not (a in (None, "") and b in (None, "")):
                        self.differ(where, "number", a, b)
                    continue
                try:
                    fa, fb = float(a), float(b)
                except (TypeError, ValueError):
                    self.differ(where, "number", a, b)
                    continue
                if not (math.isclose(fa, fb, rel_tol=1e-6, abs_tol=1e-9) or (math.isnan(fa) and math.isnan(fb))):
                    self.differ(where, "number", a, b)
            return
        norm = lambda vs: [(v.rstrip(" \x00") if isinstance(v, str) else v) for v in vs]  # noqa: E731
        if vr == "PN":
            norm = lambda vs: [({k: x.rstrip(" ") for k, x in v.items() if x} if isinstance(v, dict) else v) for v in vs]  # noqa: E731
        a, b = norm(ours), norm(theirs)
        # pydicom writes empty values of multi-valued strings as "" where the model has null.
        b = [None if x == "" else x for x in b]
        a = [None if x == "" else x for x in a]
        while a and a[-1] is None and len(a) > len(b):
            a.pop()
        if a != b:
            self.differ(where, "value", ours, theirs)

    def compare_dataset(self, where, ours, theirs, pyds, big_endian, compressed=False):
        skip = lambda k: k.endswith("0000") or k == "FFFCFFFC" or k.startswith("0002")  # noqa: E731
        keys = {k for k in ours if not skip(k)} | {k for k in theirs if not skip(k)}
        for key in sorted(keys):
            path = f"{where}/{key}"
            self.elements += 1
            if key not in ours:
                self.differ(path, "missing in vna", None, theirs[key])
                continue
            if key not in theirs:
                self.differ(path, "extra in vna", ours[key], None)
                continue
            o, t = ours[key], theirs[key]
            if o.get("vr") != t.get("vr") and not ({o.get("vr"), t.get("vr")} <= BINARY):
                self.differ(path, "vr", o.get("vr"), t.get("vr"))
                continue
            vr = t.get("vr")
            if vr == "SQ":
                oi, ti = o.get("Value", []), t.get("Value", [])
                if len(oi) != len(ti):
                    self.differ(path, "items", len(oi), len(ti))
                    continue
                elem = pyds[int(key, 16)] if pyds is not None else None
                for n, (a, b) in enumerate(zip(oi, ti)):
                    sub = elem.value[n] if elem is not None else None
                    self.compare_dataset(f"{path}/{n}", a, b, sub, big_endian)
            elif vr in BINARY or "InlineBinary" in t or "BulkDataURI" in t:
                if big_endian:
                    continue  # the model's binary values are little endian; pydicom keeps the file's order
                ours_bytes = self.our_bytes(o)
                elem = pyds[int(key, 16)] if pyds is not None else None
                theirs_bytes = elem.value if elem is not None and isinstance(elem.value, bytes) else b""
                if key == "7FE00010" and compressed:
                    # generate_fragments yields the Basic Offset Table first; bulk data is the fragments.
                    theirs_bytes = b"".join(list(generate_fragments(theirs_bytes))[1:])
                if ours_bytes.rstrip(b"\x00") != theirs_bytes.rstrip(b"\x00"):
                    self.differ(path, "binary", len(ours_bytes), len(theirs_bytes))
            else:
                self.compare_values(path, vr, o.get("Value", []), t.get("Value", []))

    def check_file(self, path):
        ds = pydicom.dcmread(path)
        st, se, sop = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
        where = path.rsplit("/", 1)[-1]
        # QIDO-RS at three levels.
        if not any(r["0020000D"]["Value"][0] == st for r in self.client.search_for_studies(search_filters={"StudyInstanceUID": st})):
            self.differ(where, "study not found by QIDO-RS", None, st)
        if not self.client.search_for_series(st, search_filters={"SeriesInstanceUID": se}):
            self.differ(where, "series not found by QIDO-RS", None, se)
        found = self.client.search_for_instances(st, se, search_filters={"SOPInstanceUID": sop})
        if len(found) != 1 or found[0]["00080018"]["Value"][0] != sop:
            self.differ(where, "instance not found by QIDO-RS", found, sop)
        # Metadata against pydicom's JSON.
        ours = self.client.retrieve_instance_metadata(st, se, sop)
        theirs = ds.to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=lambda e: "bulk")
        big_endian = ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.2"
        compressed = ds.file_meta.TransferSyntaxUID.is_compressed
        self.compare_dataset(where, ours, theirs, ds, big_endian, compressed)
        # The instance through the client.
        got = self.client.retrieve_instance(st, se, sop)
        if got.SOPInstanceUID != sop or len(got) != len(ds):
            self.differ(where, "retrieved instance", len(got), len(ds))
        # Frame 1.
        if "PixelData" in ds and "Rows" in ds and not big_endian:
            ts = ds.file_meta.TransferSyntaxUID
            media = "application/octet-stream" if not ts.is_compressed else None
            try:
                if media:
                    frames = self.client.retrieve_instance_frames(st, se, sop, [1], media_types=(media,))
                else:
                    frames = self.client.retrieve_instance_frames(st, se, sop, [1])
            except Exception as e:  # noqa: BLE001
                self.differ(where, "frame 1 retrieval", str(e)[:200], ts)
                return
            nframes = int(ds.get("NumberOfFrames", 1) or 1)
            if not ts.is_compressed:
                size = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
                expected = ds.PixelData[:size]
            else:
                fragments = list(generate_fragments(ds.PixelData))[1:]
                expected = fragments[0] if len(fragments) == nframes else (b"".join(fragments) if nframes == 1 else None)
            if expected is not None and frames[0] != expected:
                self.differ(where, "frame 1", len(frames[0]), len(expected))


def main():
    url, files = sys.argv[1], sys.argv[2:]
    c = Checker(url)
    for f in files:
        try:
            c.check_file(f)
        except Exception as e:  # noqa: BLE001
            c.differ(f, "exception", str(e)[:300], None)
    # STOW-RS through the client.
    stored = 0
    for f in files[:2]:
        ds = pydicom.dcmread(f)
        ds.SOPInstanceUID = pydicom.uid.generate_uid(prefix="2.25.")
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        rsp = c.client.store_instances([ds])
        refs = rsp.get("ReferencedSOPSequence", []) if rsp is not None else []
        if len(refs) == 1:
            stored += 1
        if not c.client.search_for_instances(search_filters={"SOPInstanceUID": ds.SOPInstanceUID}):
            c.differ(f, "client-stored instance not found", None, ds.SOPInstanceUID)
    print(json.dumps({"files": len(files), "elements": c.elements, "client_stored": stored, "mismatches": c.mismatches}, indent=1))
    sys.exit(1 if c.mismatches or stored != min(2, len(files)) else 0)


if __name__ == "__main__":
    main()
