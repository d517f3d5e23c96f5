#!/usr/bin/env python3
"""A C-MOVE whose destination drops its association midway (pynetdicom), for vna's tests.

usage: dropping_move.py VNA_PORT DEST_PORT STUDY_UID DROP_AT
Runs a storage SCP "DROPPER" on DEST_PORT that accepts the first DROP_AT - 1 C-STOREs and
aborts the association when C-STORE number DROP_AT arrives, then asks vna (AE "VNA") to move
the study to DROPPER. Prints JSON: the final C-MOVE status and its sub-operation counts, the
C-STOREs the destination saw, and the associations it accepted.
"""
import json
import sys

from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MOVE

vna_port, dest_port, study, drop_at = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
seen = {"stores": 0, "associations": 0}


def on_store(event):
    seen["stores"] += 1
    if seen["stores"] == drop_at:
        event.assoc.abort()
        return 0xA700
    return 0x0000


def on_accepted(event):
    seen["associations"] += 1


dest = AE(ae_title="DROPPER")
dest.supported_contexts = AllStoragePresentationContexts
server = dest.start_server(("127.0.0.1", dest_port), block=False,
                           evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_ACCEPTED, on_accepted)])

scu = AE(ae_title="MOVER")
scu.add_requested_context(MOVE)
assoc = scu.associate("127.0.0.1", vna_port, ae_title="VNA")
if not assoc.is_established:
    sys.exit("association refused")
query = Dataset()
query.QueryRetrieveLevel = "STUDY"
query.StudyInstanceUID = study
final = None
for status, _ in assoc.send_c_move(query, "DROPPER", MOVE):
    if status is None or "Status" not in status:
        break
    if status.Status not in (0xFF00, 0xFF01):
        final = {
            "status": int(status.Status),
            "completed": int(status.get("NumberOfCompletedSuboperations", -1)),
            "failed": int(status.get("NumberOfFailedSuboperations", -1)),
            "warning": int(status.get("NumberOfWarningSuboperations", -1)),
            "comment": str(status.get("ErrorComment", "")),
        }
assoc.release()
server.shutdown()
print(json.dumps({"final": final, **seen}))
