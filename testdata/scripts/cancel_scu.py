#!/usr/bin/env python3
"""C-CANCEL of a running C-GET (pynetdicom) for vna's tests.

usage: cancel_scu.py PORT STUDY_UID
Sends a C-GET of the study with a C-CANCEL after the first pending response. Prints JSON:
the final status, the pending responses and instances received before the final one, and
the remaining sub-operations the final response reports. (The C-FIND half of the test sends
its cancel with the request, from Rust: a cancel sent after reading a response can come too
late for a fast server.)
"""
import json
import sys

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet as GET,
)

port, study = int(sys.argv[1]), sys.argv[2]
received = []


def on_store(event):
    received.append(event.request.AffectedSOPInstanceUID)
    return 0x0000


ae = AE(ae_title="CANCELLER")
ae.add_requested_context(GET)
ae.add_requested_context(CTImageStorage)
assoc = ae.associate("127.0.0.1", port, ae_title="VNA", ext_neg=[build_role(CTImageStorage, scp_role=True)],
                     evt_handlers=[(evt.EVT_C_STORE, on_store)])
if not assoc.is_established:
    sys.exit("association refused")
report = {}

get = Dataset()
get.QueryRetrieveLevel = "STUDY"
get.StudyInstanceUID = study
pending, final, remaining = 0, None, None
for status, _ in assoc.send_c_get(get, GET, msg_id=9):
    if status is None or "Status" not in status:
        break
    if status.Status == 0xFF00:
        pending += 1
        if pending == 1:
            assoc.send_c_cancel(9, query_model=GET)
    else:
        final = int(status.Status)
        remaining = int(status.get("NumberOfRemainingSuboperations", -1))
report["get"] = {"final": final, "pending": pending, "received": len(received), "remaining": remaining}
assoc.release()
print(json.dumps(report))
