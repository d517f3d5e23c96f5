#!/usr/bin/env python3
"""C-CANCEL of a running C-FIND and C-GET (pynetdicom) for vna's tests.

usage: cancel_scu.py PORT STUDY_UID
Sends a Study Root C-FIND at IMAGE level for every instance of the study and a C-CANCEL
after the first pending response, then a C-GET of the study with a C-CANCEL after the first
pending response. Prints JSON: for each, the final status, the pending responses (or
instances) received before the final one, and the number of instances in the study.
"""
import json
import sys

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind as FIND,
    StudyRootQueryRetrieveInformationModelGet as GET,
)

port, study = int(sys.argv[1]), sys.argv[2]
received = []


def on_store(event):
    received.append(event.request.AffectedSOPInstanceUID)
    return 0x0000


ae = AE(ae_title="CANCELLER")
ae.add_requested_context(FIND)
ae.add_requested_context(GET)
ae.add_requested_context(CTImageStorage)
assoc = ae.associate("127.0.0.1", port, ae_title="VNA", ext_neg=[build_role(CTImageStorage, scp_role=True)],
                     evt_handlers=[(evt.EVT_C_STORE, on_store)])
if not assoc.is_established:
    sys.exit("association refused")
query = Dataset()
query.QueryRetrieveLevel = "IMAGE"
query.StudyInstanceUID = study
query.SeriesInstanceUID = ""
query.SOPInstanceUID = ""
report = {}

pending, final = 0, None
for status, _ in assoc.send_c_find(query, FIND, msg_id=7):
    if status is None or "Status" not in status:
        break
    if status.Status in (0xFF00, 0xFF01):
        pending += 1
        if pending == 1:
            assoc.send_c_cancel(7, query_model=FIND)
    else:
        final = int(status.Status)
report["find"] = {"final": final, "pending": pending}

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
