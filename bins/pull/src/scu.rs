//! The DIMSE side of a pull: C-FIND (Study Root, STUDY level) to plan, C-MOVE of one study to
//! vna's own AE title to fetch. The source stores the study's instances into vna's C-STORE
//! SCP on an association of its own; by the time the final C-MOVE response arrives, every
//! instance it reports as completed is durable in vna.

use crate::error::PullError;
use crate::job::{DateRange, PlannedStudy};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::client::AsyncClientAssociation;
use dicom_ul::pdu::{PDataValue, PDataValueType};
use dimse::command::{CFindRq, CMoveRq, Message, Priority};
use dimse::status::{self, StatusKind};
use std::time::Duration;
use tokio::net::TcpStream;

/// Study Root Query/Retrieve Information Model – FIND.
pub const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
/// Study Root Query/Retrieve Information Model – MOVE.
pub const STUDY_ROOT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.2.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";

const QUERY_RETRIEVE_LEVEL: Tag = Tag(0x0008, 0x0052);
const STUDY_DATE: Tag = Tag(0x0008, 0x0020);
const PATIENT_ID: Tag = Tag(0x0010, 0x0020);
const STUDY_INSTANCE_UID: Tag = Tag(0x0020, 0x000D);
const NUMBER_OF_STUDY_RELATED_INSTANCES: Tag = Tag(0x0020, 0x1208);

/// A DIMSE source: who vna is, who the source is and where.
#[derive(Debug, Clone)]
pub struct DimseSource {
    /// vna's AE title: the calling AE and the move destination.
    pub own_ae: String,
    /// The source's AE title.
    pub ae_title: String,
    /// The source's host.
    pub host: String,
    /// The source's port.
    pub port: u16,
    /// How long to wait for any answer.
    pub timeout: Duration,
}

/// The outcome of one C-MOVE, as the source reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MoveOutcome {
    /// The final status.
    pub status: u16,
    /// Completed sub-operations.
    pub completed: u64,
    /// Failed sub-operations.
    pub failed: u64,
    /// Sub-operations that completed with a warning.
    pub warning: u64,
}

struct Assoc {
    assoc: AsyncClientAssociation<TcpStream>,
    pc: u8,
    ts: String,
    max_pdu: u32,
    /// Assembles the source's answers.
    reader: dimse::ul::MessageReader,
}

fn net(what: &str, e: impl std::fmt::Display) -> PullError {
    PullError::Network(format!("{what}: {e}"))
}

impl DimseSource {
    async fn open(&self, abstract_syntax: &str) -> Result<Assoc, PullError> {
        let establish = dicom_ul::ClientAssociationOptions::new()
            .calling_ae_title(self.own_ae.clone())
            .called_ae_title(self.ae_title.clone())
            .with_presentation_context(abstract_syntax, vec![EXPLICIT_LE, IMPLICIT_LE])
            .connection_timeout(self.timeout.min(Duration::from_secs(30)))
            .read_timeout(self.timeout)
            .write_timeout(self.timeout)
            .establish_async((self.host.as_str(), self.port));
        let mut assoc = tokio::time::timeout(self.timeout, establish)
            .await
            .map_err(|_| net("association", "no answer in time"))?
            .map_err(|e| net(&format!("association with {} at {}:{}", self.ae_title, self.host, self.port), e))?;
        // Small requests must not wait for delayed ACKs (Nagle).
        let _ = assoc.inner_stream().set_nodelay(true);
        let Some(ctx) = assoc
            .presentation_contexts()
            .iter()
            .find(|c| c.reason == dicom_ul::pdu::PresentationContextResultReason::Acceptance)
        else {
            let _ = assoc.abort().await;
            return Err(PullError::Remote(format!("{} accepts no context for {abstract_syntax}", self.ae_title)));
        };
        let (pc, ts) = (ctx.id, ctx.transfer_syntax.clone());
        let max_pdu = assoc.acceptor_max_pdu_length();
        Ok(Assoc { assoc, pc, ts, max_pdu, reader: dimse::ul::MessageReader::new(16 << 20) })
    }

    /// Every study the source holds with a StudyDate in `range` (every study when unbounded),
    /// with its instance count, Patient ID and date; a study reported twice (the same UID
    /// under two patients) is listed once with the counts added.
    pub async fn find_studies(&self, range: &DateRange) -> Result<Vec<PlannedStudy>, PullError> {
        let mut a = self.open(STUDY_ROOT_FIND).await?;
        let mut id = InMemDicomObject::new_empty();
        let put = |id: &mut InMemDicomObject, tag: Tag, vr: VR, v: Option<String>| {
            id.put(DataElement::new(tag, vr, v.map(PrimitiveValue::from).unwrap_or(PrimitiveValue::Empty)));
        };
        put(&mut id, QUERY_RETRIEVE_LEVEL, VR::CS, Some("STUDY".into()));
        put(&mut id, STUDY_DATE, VR::DA, range.to_dicom());
        put(&mut id, PATIENT_ID, VR::LO, None);
        put(&mut id, STUDY_INSTANCE_UID, VR::UI, None);
        put(&mut id, NUMBER_OF_STUDY_RELATED_INSTANCES, VR::IS, None);
        let rq = CFindRq { message_id: 1, affected_sop_class: STUDY_ROOT_FIND.into(), priority: Priority::Low };
        let result = async {
            let identifier = encode(&id, &a.ts)?;
            send(&mut a, &Message::from(rq).encode(), Some(&identifier)).await?;
            let mut studies: Vec<PlannedStudy> = Vec::new();
            let mut index = std::collections::HashMap::new();
            loop {
                let (message, dataset) = receive(&mut a).await?;
                let code = message.status().unwrap_or(status::PROCESSING_FAILURE);
                match status::kind(code) {
                    StatusKind::Pending => {
                        let Some(ds) = dataset else { continue };
                        let Some(study) = decode_match(&ds, &a.ts)? else { continue };
                        match index.get(&study.uid) {
                            Some(&i) => {
                                let s: &mut PlannedStudy = &mut studies[i];
                                s.remote_instances = match (s.remote_instances, study.remote_instances) {
                                    (Some(x), Some(y)) => Some(x + y),
                                    _ => None,
                                };
                            }
                            None => {
                                index.insert(study.uid.clone(), studies.len());
                                studies.push(study);
                            }
                        }
                    }
                    StatusKind::Success => return Ok(studies),
                    _ => {
                        return Err(PullError::Remote(format!(
                            "C-FIND ended with status {code:04X}{}",
                            comment(&message)
                        )))
                    }
                }
            }
        }
        .await;
        release(a).await;
        result
    }

    /// Asks the source to C-MOVE one study to vna (`own_ae`); `progress` gets the completed
    /// count from each pending response. Returns the final counts; a failure status without
    /// any completed sub-operation is an error.
    pub async fn move_study(&self, study: &str, mut progress: impl FnMut(u64)) -> Result<MoveOutcome, PullError> {
        let mut a = self.open(STUDY_ROOT_MOVE).await?;
        let mut id = InMemDicomObject::new_empty();
        id.put(DataElement::new(QUERY_RETRIEVE_LEVEL, VR::CS, PrimitiveValue::from("STUDY")));
        id.put(DataElement::new(STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from(study)));
        let rq = CMoveRq {
            message_id: 1,
            affected_sop_class: STUDY_ROOT_MOVE.into(),
            priority: Priority::Low,
            move_destination: self.own_ae.clone(),
        };
        let result = async {
            let identifier = encode(&id, &a.ts)?;
            send(&mut a, &Message::from(rq).encode(), Some(&identifier)).await?;
            loop {
                let (message, _) = receive(&mut a).await?;
                let Message::CMoveRsp(rsp) = &message else {
                    return Err(PullError::Remote(format!(
                        "expected a C-MOVE response, got {:?}",
                        message.command_field()
                    )));
                };
                let n = |v: Option<u16>| u64::from(v.unwrap_or(0));
                let sub = rsp.sub_operations;
                let outcome = MoveOutcome {
                    status: rsp.status,
                    completed: n(sub.completed),
                    failed: n(sub.failed),
                    warning: n(sub.warning),
                };
                match status::kind(rsp.status) {
                    StatusKind::Pending => progress(outcome.completed + outcome.warning),
                    StatusKind::Success | StatusKind::Warning => return Ok(outcome),
                    _ if outcome.completed + outcome.warning > 0 => return Ok(outcome),
                    _ => {
                        return Err(PullError::Remote(format!(
                            "C-MOVE of study {study} to {} ended with status {:04X}{}",
                            self.own_ae,
                            rsp.status,
                            comment(&message)
                        )))
                    }
                }
            }
        }
        .await;
        release(a).await;
        result
    }
}

fn comment(m: &Message) -> String {
    let cs = m.to_command_set();
    cs.text(0x0902).ok().flatten().map(|c| format!(" ({})", c.trim())).unwrap_or_default()
}

async fn release(a: Assoc) {
    let _ = tokio::time::timeout(Duration::from_secs(10), a.assoc.release()).await;
}

fn encode(obj: &InMemDicomObject, ts_uid: &str) -> Result<Vec<u8>, PullError> {
    let ts = TransferSyntaxRegistry
        .get(ts_uid)
        .ok_or_else(|| PullError::Remote(format!("unknown transfer syntax {ts_uid}")))?;
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, ts).map_err(|e| PullError::Remote(format!("encoding the identifier: {e}")))?;
    Ok(out)
}

/// Sends a command and its data set, in one P-DATA PDU when they fit (one write: no
/// Nagle/delayed-ACK stall between two small writes).
async fn send(a: &mut Assoc, command: &[u8], dataset: Option<&[u8]>) -> Result<(), PullError> {
    let mut pdvs = Vec::new();
    let parts = std::iter::once((true, command)).chain(dataset.map(|d| (false, d)));
    for (is_command, bytes) in parts {
        for f in dimse::pdv::fragments(a.pc, is_command, bytes, a.max_pdu) {
            let value_type = if f.is_command { PDataValueType::Command } else { PDataValueType::Data };
            pdvs.push(PDataValue {
                presentation_context_id: a.pc,
                value_type,
                is_last: f.is_last,
                data: f.data.to_vec(),
            });
        }
    }
    let total: usize = pdvs.iter().map(|p| p.data.len() + 6).sum();
    if total + 6 <= a.max_pdu as usize {
        a.assoc.send(&dicom_ul::Pdu::PData { data: pdvs }).await.map_err(|e| net("sending", e))
    } else {
        for pdv in pdvs {
            a.assoc.send(&dicom_ul::Pdu::PData { data: vec![pdv] }).await.map_err(|e| net("sending", e))?;
        }
        Ok(())
    }
}

/// The next complete message and its data set.
async fn receive(a: &mut Assoc) -> Result<(Message, Option<Vec<u8>>), PullError> {
    use dimse::ul::{ReceiveError, Received};
    let received = a.reader.receive(&mut a.assoc, None).await.map_err(|e| match e {
        ReceiveError::Assemble(e) => PullError::Remote(e.to_string()),
        other => net("receiving", archive_core::error_chain::error_chain(&other)),
    })?;
    match received {
        Received::Message(m) => {
            let (_, command, dataset) = m.into_parts();
            let message = Message::decode(&command).map_err(|e| PullError::Remote(e.to_string()))?;
            Ok((message, dataset))
        }
        Received::Pdu(dicom_ul::Pdu::AbortRQ { .. }) => Err(net("receiving", "the source aborted the association")),
        Received::Pdu(dicom_ul::Pdu::ReleaseRQ) => Err(net("receiving", "the source released the association")),
        Received::Pdu(other) => Err(PullError::Remote(format!("unexpected {}", other.short_description()))),
    }
}

/// One C-FIND match as a planned study (`None` without a usable Study Instance UID).
fn decode_match(ds: &[u8], ts_uid: &str) -> Result<Option<PlannedStudy>, PullError> {
    let ts = TransferSyntaxRegistry
        .get(ts_uid)
        .ok_or_else(|| PullError::Remote(format!("unknown transfer syntax {ts_uid}")))?;
    let obj = InMemDicomObject::read_dataset_with_ts(ds, ts)
        .map_err(|e| PullError::Remote(format!("unreadable C-FIND match: {e}")))?;
    let text = |tag: Tag| -> String {
        obj.get(tag)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_matches(|c: char| c == '\0' || c.is_whitespace()).to_string())
            .unwrap_or_default()
    };
    let uid = text(STUDY_INSTANCE_UID);
    if uid.is_empty() {
        return Ok(None);
    }
    Ok(Some(PlannedStudy {
        uid,
        remote_instances: text(NUMBER_OF_STUDY_RELATED_INSTANCES).parse().ok(),
        patient_id: text(PATIENT_ID),
        study_date: text(STUDY_DATE),
    }))
}
