#!/usr/bin/env python3
"""Storage Commitment SCU (pynetdicom) for vna's tests.

usage: commitment_scu.py PORT [--new-association LISTEN_PORT] CLASS_UID:INSTANCE_UID...
Sends one N-ACTION (Storage Commitment Push Model) to AE "VNA" on 127.0.0.1:PORT, waits
for the N-EVENT-REPORT and prints a JSON object with the N-ACTION status, the event type,
and the committed and failed instance UIDs. By default the report is awaited on the same
association; with --new-association the SCU releases right after the N-ACTION response and
waits for the report on a new association to its own SCP on LISTEN_PORT (AE "MODALITY").
"""
import json
import sys
import time

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

port = int(sys.argv[1])
args = sys.argv[2:]
listen_port = None
if args and args[0] == "--new-association":
    listen_port = int(args[1])
    args = args[2:]
refs = [arg.split(":") for arg in args]
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


def on_event_report_as_scp(event):
    # As an acceptor, pynetdicom wants the status and the event reply.
    return on_event_report(event), None


ae = AE(ae_title="MODALITY")
ae.add_requested_context(StorageCommitmentPushModel)
server = None
if listen_port is not None:
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
    server = ae.start_server(("127.0.0.1", listen_port), block=False,
                             evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_event_report_as_scp)])
    handlers = []
else:
    handlers = [(evt.EVT_N_EVENT_REPORT, on_event_report)]
assoc = ae.associate("127.0.0.1", port, ae_title="VNA", evt_handlers=handlers)
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
if listen_port is not None:
    assoc.release()
deadline = time.time() + 20
while "event_type" not in report and time.time() < deadline:
    time.sleep(0.05)
if listen_port is None:
    assoc.release()
if server is not None:
    server.shutdown()
report["action_status"] = int(status.Status) if status else None
report["sent_transaction"] = str(request.TransactionUID)
print(json.dumps(report))
