#!/usr/bin/env python3
"""Storage Commitment report listener (pynetdicom) for vna's tests.

usage: commitment_listener.py PORT [SECONDS]
Runs an SCP with AE title "MODALITY" on 127.0.0.1:PORT that accepts the Storage Commitment
Push Model in the SCU role of the SOP class (it receives N-EVENT-REPORTs), waits up to SECONDS
(default 30) for one report and prints it as JSON: event type, transaction, committed UIDs.
Prints "{}" when none arrived.
"""
import json
import sys
import time

import os

from pynetdicom import AE, debug_logger, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

if os.environ.get("PYNETDICOM_DEBUG"):
    debug_logger()
port = int(sys.argv[1])
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 30.0
report = {}


def on_event_report(event):
    ds = event.event_information
    report["event_type"] = event.event_type
    report["transaction"] = str(ds.TransactionUID)
    report["committed"] = [i.ReferencedSOPInstanceUID for i in ds.get("ReferencedSOPSequence", [])]
    return 0x0000, None  # status, event reply


ae = AE(ae_title="MODALITY")
ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_event_report)])
print("listening", file=sys.stderr, flush=True)
deadline = time.time() + seconds
while "event_type" not in report and time.time() < deadline:
    time.sleep(0.05)
time.sleep(1.0)  # let the response and the release go out before shutting down
server.shutdown()
print(json.dumps(report))
