#!/usr/bin/env python3
"""Storage Commitment SCU (pynetdicom) for vna's tests.

usage: commitment_scu.py PORT CLASS_UID:INSTANCE_UID...
Sends one N-ACTION (Storage Commitment Push Model) to AE "VNA" on 127.0.0.1:PORT, waits
for the N-EVENT-REPORT on the same association and prints a JSON object with the
N-ACTION status, the event type, and the committed and failed instance UIDs.
"""
import json
import sys
import time

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

port = int(sys.argv[1])
refs = [arg.split(":") for arg in sys.argv[2:]]
report = {}


def on_event_report(event):
    ds = event.event_information
    report["event_type"] = event.event_type
    report["committed"] = [i.ReferencedSOPInstanceUID for i in ds.get("ReferencedSOPSequence", [])]
    report["failed"] = [
        {"uid": i.ReferencedSOPInstanceUID, "reason": int(i.FailureReason)} for i in ds.get("FailedSOPSequence", [])
    ]
    report["transaction"] = str(ds.TransactionUID)
    return 0x0000


ae = AE(ae_title="MODALITY")
ae.add_requested_context(StorageCommitmentPushModel)
assoc = ae.associate("127.0.0.1", port, ae_title="VNA", evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_event_report)])
if not assoc.is_established:
    sys.exit("association refused")
request = Dataset()
request.TransactionUID = generate_uid()
request.ReferencedSOPSequence = []
for cls, inst in refs:
    item = Dataset()
    item.ReferencedSOPClassUID = cls
    item.ReferencedSOPInstanceUID = inst
    request.ReferencedSOPSequence.append(item)
status, _ = assoc.send_n_action(request, 1, StorageCommitmentPushModel, "1.2.840.10008.1.20.1.1")
deadline = time.time() + 20
while "event_type" not in report and time.time() < deadline:
    time.sleep(0.05)
assoc.release()
report["action_status"] = int(status.Status) if status else None
report["sent_transaction"] = str(request.TransactionUID)
print(json.dumps(report))
