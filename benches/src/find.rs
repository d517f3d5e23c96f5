//! A DIMSE C-FIND client for the load generator: Study Root queries over one association,
//! one request at a time, timed from the request to the final response.

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::pdu::{PDataValue, PDataValueType};
use dimse::command::{CFindRq, Message, Priority};
use std::time::{Duration, Instant};

/// Study Root Query/Retrieve Information Model – FIND.
pub const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

/// One open association for C-FIND.
pub struct FindClient {
    assoc: dicom_ul::association::client::AsyncClientAssociation<tokio::net::TcpStream>,
    pc: u8,
    max_pdu: u32,
    message_id: u16,
}

/// A query key: tag, VR and value (empty for a return key).
pub type Key = (Tag, VR, String);

impl FindClient {
    /// Opens an association from `calling` to `called` at `addr`.
    pub async fn connect(addr: &str, calling: &str, called: &str) -> anyhow::Result<Self> {
        let assoc = dicom_ul::ClientAssociationOptions::new()
            .calling_ae_title(calling)
            .called_ae_title(called)
            .with_presentation_context(STUDY_ROOT_FIND, vec![EXPLICIT_LE])
            .read_timeout(Duration::from_secs(120))
            .establish_async(addr)
            .await?;
        let pc = assoc.presentation_contexts().first().map(|c| c.id).ok_or_else(|| anyhow::anyhow!("no context"))?;
        let max_pdu = assoc.acceptor_max_pdu_length();
        Ok(Self { assoc, pc, max_pdu, message_id: 0 })
    }

    /// Runs one C-FIND at `level`; returns the matches (pending responses) and the time to the final response.
    pub async fn find(&mut self, level: &str, keys: &[Key]) -> anyhow::Result<(Vec<InMemDicomObject>, Duration)> {
        let mut identifier = InMemDicomObject::new_empty();
        identifier.put(DataElement::new(Tag(0x0008, 0x0052), VR::CS, PrimitiveValue::from(level)));
        for (tag, vr, value) in keys {
            let v = if value.is_empty() { PrimitiveValue::Empty } else { PrimitiveValue::from(value.as_str()) };
            identifier.put(DataElement::new(*tag, *vr, v));
        }
        let ts = TransferSyntaxRegistry.get(EXPLICIT_LE).expect("registered");
        let mut data = Vec::new();
        identifier.write_dataset_with_ts(&mut data, ts)?;
        self.message_id = self.message_id.wrapping_add(1);
        let rq = CFindRq {
            message_id: self.message_id,
            affected_sop_class: STUDY_ROOT_FIND.into(),
            priority: Priority::Medium,
        };
        let started = Instant::now();
        // Command and identifier go in one P-DATA PDU when they fit, so that the request is one
        // write: with two small writes, Nagle's algorithm and delayed ACKs add ~40 ms.
        let mut pdvs = Vec::new();
        for (is_command, bytes) in [(true, Message::from(rq).encode()), (false, data)] {
            for f in dimse::pdv::fragments(self.pc, is_command, &bytes, self.max_pdu) {
                let value_type = if f.is_command { PDataValueType::Command } else { PDataValueType::Data };
                pdvs.push(PDataValue {
                    presentation_context_id: self.pc,
                    value_type,
                    is_last: f.is_last,
                    data: f.data.to_vec(),
                });
            }
        }
        let total: usize = pdvs.iter().map(|p| p.data.len() + 6).sum();
        if total + 6 <= self.max_pdu as usize {
            self.assoc.send(&dicom_ul::Pdu::PData { data: pdvs }).await?;
        } else {
            for pdv in pdvs {
                self.assoc.send(&dicom_ul::Pdu::PData { data: vec![pdv] }).await?;
            }
        }
        let mut reader = dimse::ul::MessageReader::new(64 << 20);
        let mut matches = Vec::new();
        loop {
            let dimse::ul::Received::Message(m) = reader.receive(&mut self.assoc, None).await? else {
                anyhow::bail!("unexpected PDU during C-FIND");
            };
            let status = Message::decode(&m.command)?.status().unwrap_or(0xC000);
            match dimse::status::kind(status) {
                dimse::status::StatusKind::Pending => {
                    if let Some(ds) = m.dataset {
                        matches.push(InMemDicomObject::read_dataset_with_ts(&ds[..], ts)?);
                    }
                }
                dimse::status::StatusKind::Success => return Ok((matches, started.elapsed())),
                _ => anyhow::bail!("C-FIND ended with status {status:04X}"),
            }
        }
    }

    /// Releases the association.
    pub async fn release(self) {
        let _ = self.assoc.release().await;
    }
}
