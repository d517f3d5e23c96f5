//! DIMSE clients for the load generator: C-STORE SCU over one association, a minimal
//! C-STORE SCP (the C-MOVE destination the loadgen listens as), and C-MOVE / C-GET of whole
//! studies with the Study Root information model. Everything speaks Explicit VR Little Endian.

use crate::dataset::{EXPLICIT_VR_LE, GENERATED_STORAGE_CLASSES};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::{AsyncClientAssociation, AsyncServerAssociation};
use dicom_ul::pdu::{PDataValue, PDataValueType};
use dicom_ul::Pdu;
use dimse::command::{CGetRq, CMoveRq, CStoreRq, CStoreRsp, Message, Priority};
use dimse::pdv::MessageAssembler;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Study Root Query/Retrieve Information Model – MOVE.
pub const STUDY_ROOT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.2.2";
/// Study Root Query/Retrieve Information Model – GET.
pub const STUDY_ROOT_GET: &str = "1.2.840.10008.5.1.4.1.2.2.3";
/// The PDU size the loadgen offers to receive.
const OUR_MAX_PDU: u32 = 65536;
const MAX_DATASET: usize = 1 << 30;

/// The data set of a Part-10 file (the bytes after the file meta group).
pub fn dataset_of(part10: &[u8]) -> anyhow::Result<&[u8]> {
    anyhow::ensure!(part10.len() >= 144 && &part10[128..132] == b"DICM", "not a Part-10 file");
    let group_len = u32::from_le_bytes(part10[140..144].try_into()?) as usize;
    part10.get(144 + group_len..).ok_or_else(|| anyhow::anyhow!("truncated file meta"))
}

/// The PDUs of one message: command and data set in one PDU when they fit, else one PDU
/// per fragment.
fn pdus(pc: u8, command: &[u8], data: Option<&[u8]>, max_pdu: u32) -> Vec<Pdu> {
    let mut pdvs = Vec::new();
    let parts = [(true, Some(command)), (false, data)];
    for (is_command, bytes) in parts {
        let Some(bytes) = bytes else { continue };
        for f in dimse::pdv::fragments(pc, is_command, bytes, max_pdu) {
            let value_type = if f.is_command { PDataValueType::Command } else { PDataValueType::Data };
            pdvs.push(PDataValue {
                presentation_context_id: pc,
                value_type,
                is_last: f.is_last,
                data: f.data.to_vec(),
            });
        }
    }
    let total: usize = pdvs.iter().map(|p| p.data.len() + 6).sum();
    if total + 6 <= max_pdu as usize {
        vec![Pdu::PData { data: pdvs }]
    } else {
        pdvs.into_iter().map(|p| Pdu::PData { data: vec![p] }).collect()
    }
}

fn store_rsp(rq: &CStoreRq) -> Vec<u8> {
    Message::from(CStoreRsp {
        message_id_being_responded_to: rq.message_id,
        affected_sop_class: Some(rq.affected_sop_class.clone()),
        affected_sop_instance: Some(rq.affected_sop_instance.clone()),
        status: 0,
        error_comment: None,
    })
    .encode()
}

/// One association for C-STORE of the generated storage classes.
pub struct StoreClient {
    assoc: AsyncClientAssociation<TcpStream>,
    max_pdu: u32,
    message_id: u16,
    /// The framed PDUs of the message being sent (reused).
    out: Vec<u8>,
}

impl StoreClient {
    /// Opens an association from `calling` to `called` at `addr`, proposing every storage
    /// class the generator produces in Explicit VR Little Endian.
    pub async fn connect(addr: &str, calling: &str, called: &str) -> anyhow::Result<Self> {
        let mut options = dicom_ul::ClientAssociationOptions::new()
            .calling_ae_title(calling)
            .called_ae_title(called)
            .max_pdu_length(OUR_MAX_PDU)
            .read_timeout(Duration::from_secs(300));
        for class in GENERATED_STORAGE_CLASSES {
            options = options.with_presentation_context(*class, vec![EXPLICIT_VR_LE]);
        }
        let mut assoc = options.establish_async(addr).await?;
        assoc.inner_stream().set_nodelay(true)?;
        let max_pdu = assoc.acceptor_max_pdu_length();
        let max_pdu = if max_pdu == 0 { 1 << 20 } else { max_pdu };
        Ok(Self { assoc, max_pdu, message_id: 0, out: Vec::new() })
    }

    /// Stores one Part-10 file (Explicit VR LE); returns the status and the time to the response.
    pub async fn store(
        &mut self,
        sop_class: &str,
        sop_instance: &str,
        part10: &[u8],
    ) -> anyhow::Result<(u16, Duration)> {
        let pc = self
            .assoc
            .presentation_contexts()
            .iter()
            .find(|c| c.abstract_syntax == sop_class)
            .map(|c| c.id)
            .ok_or_else(|| anyhow::anyhow!("the archive accepted no context for {sop_class}"))?;
        self.message_id = self.message_id.wrapping_add(1);
        let rq = CStoreRq {
            message_id: self.message_id,
            affected_sop_class: sop_class.into(),
            affected_sop_instance: sop_instance.into(),
            priority: Priority::Medium,
            move_originator_ae: None,
            move_originator_message_id: None,
        };
        let started = Instant::now();
        // Framed here and written in one go: dicom_ul's PDU encoder copies every byte several
        // times, which would make the load generator, not the archive, the bottleneck.
        let command = Message::from(rq).encode();
        self.out.clear();
        dimse::pdv::encode_pdus(&mut self.out, pc, true, &command, self.max_pdu);
        dimse::pdv::encode_pdus(&mut self.out, pc, false, dataset_of(part10)?, self.max_pdu);
        self.assoc.inner_stream().write_all(&self.out).await?;
        let mut reader = dimse::ul::MessageReader::new(1 << 20);
        let dimse::ul::Received::Message(m) = reader.receive(&mut self.assoc, None).await? else {
            anyhow::bail!("unexpected PDU during C-STORE");
        };
        let status = Message::decode(&m.command)?.status().unwrap_or(0xC000);
        Ok((status, started.elapsed()))
    }

    /// Releases the association.
    pub async fn release(self) {
        let _ = self.assoc.release().await;
    }
}

/// What arrives on an established association, read straight from its stream: `dicom_ul`'s
/// reader copies every data byte twice more and would make the loadgen's receiving side, not
/// the archive, the bottleneck of C-MOVE and C-GET. Only used where nothing can be buffered
/// by `dicom_ul` past the association set-up (the peer sends nothing until it got our answer).
enum Incoming {
    /// A DIMSE message completed by the PDU just read.
    Message(dimse::pdv::AssembledMessage),
    /// An A-RELEASE-RQ.
    Release,
    /// An A-ABORT, or the connection closed.
    Ended,
}

/// Reads PDUs from a stream at a PDU boundary and assembles DIMSE messages.
struct PduReader {
    assembler: MessageAssembler,
    body: Vec<u8>,
    /// Messages completed by a PDU that completed more than one.
    ready: std::collections::VecDeque<dimse::pdv::AssembledMessage>,
}

impl PduReader {
    fn new() -> Self {
        Self { assembler: MessageAssembler::new(MAX_DATASET), body: Vec::new(), ready: Default::default() }
    }

    /// The next message, release request or end of the association.
    async fn next<R: tokio::io::AsyncRead + Unpin>(&mut self, stream: &mut R) -> anyhow::Result<Incoming> {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(m) = self.ready.pop_front() {
                return Ok(Incoming::Message(m));
            }
            let mut header = [0u8; 6];
            if stream.read_exact(&mut header).await.is_err() {
                return Ok(Incoming::Ended);
            }
            let len = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize;
            anyhow::ensure!(len <= 64 << 20, "PDU of {len} bytes");
            self.body.resize(len, 0);
            stream.read_exact(&mut self.body).await?;
            match header[0] {
                0x04 => {
                    let mut rest = &self.body[..];
                    while rest.len() >= 6 {
                        let item = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                        anyhow::ensure!(item >= 2 && item + 4 <= rest.len(), "bad PDV item length {item}");
                        let (pc, control) = (rest[4], rest[5]);
                        let data = &rest[6..4 + item];
                        if let Some(m) = self.assembler.push_parts(pc, control & 1 == 1, control & 2 == 2, data)? {
                            self.ready.push_back(m);
                        }
                        rest = &rest[4 + item..];
                    }
                }
                0x05 => return Ok(Incoming::Release),
                0x07 => return Ok(Incoming::Ended),
                other => anyhow::bail!("unexpected PDU type {other:#04x} during an operation"),
            }
        }
    }
}

/// Writes one DIMSE message straight onto a stream (see [`StoreClient::store`]).
async fn write_message(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    pc: u8,
    command: &[u8],
    max_pdu: u32,
) -> anyhow::Result<()> {
    out.clear();
    dimse::pdv::encode_pdus(out, pc, true, command, max_pdu);
    stream.write_all(out).await?;
    Ok(())
}

/// A-RELEASE-RP.
const RELEASE_RP: [u8; 10] = [0x06, 0, 0, 0, 0, 4, 0, 0, 0, 0];

/// What the loadgen's own C-STORE SCP received.
#[derive(Debug, Default)]
pub struct Received {
    /// Instances received.
    pub instances: AtomicU64,
    /// Data set bytes received.
    pub bytes: AtomicU64,
}

/// Listens on `listener` as a C-STORE SCP accepting any storage class and answering
/// success to every C-STORE (the C-MOVE destination), counting into `received`.
pub fn spawn_store_scp(listener: tokio::net::TcpListener, ae_title: String, received: Arc<Received>) {
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (ae, received) = (ae_title.clone(), received.clone());
            tokio::spawn(async move {
                let _ = socket.set_nodelay(true);
                let options = dicom_ul::ServerAssociationOptions::new()
                    .accept_any()
                    .ae_title(ae)
                    .promiscuous(true)
                    .max_pdu_length(OUR_MAX_PDU)
                    .read_timeout(Duration::from_secs(300));
                let Ok(mut assoc) = options.establish_async(socket).await else { return };
                let max_pdu = assoc.acceptor_max_pdu_length();
                let _ = serve_stores(&mut assoc, max_pdu, &received).await;
            });
        }
    });
}

async fn serve_stores(
    assoc: &mut AsyncServerAssociation<TcpStream>,
    max_pdu: u32,
    received: &Received,
) -> anyhow::Result<()> {
    let mut reader = PduReader::new();
    let mut out = Vec::new();
    let stream = assoc.inner_stream();
    loop {
        match reader.next(stream).await? {
            Incoming::Message(m) => {
                if let Message::CStoreRq(rq) = Message::decode(&m.command)? {
                    received.instances.fetch_add(1, Ordering::Relaxed);
                    received.bytes.fetch_add(m.dataset.map(|d| d.len() as u64).unwrap_or(0), Ordering::Relaxed);
                    write_message(stream, &mut out, m.presentation_context_id, &store_rsp(&rq), max_pdu).await?;
                }
            }
            Incoming::Release => {
                stream.write_all(&RELEASE_RP).await?;
                return Ok(());
            }
            Incoming::Ended => return Ok(()),
        }
    }
}

/// The outcome of one study retrieval.
#[derive(Debug, Clone, Copy)]
pub struct Retrieved {
    /// Completed sub-operations reported in the final response.
    pub completed: u64,
    /// Failed sub-operations reported in the final response.
    pub failed: u64,
    /// Instances received on the association (C-GET only).
    pub instances: u64,
    /// Data set bytes received on the association (C-GET only).
    pub bytes: u64,
    /// Time from the request to the final response.
    pub elapsed: Duration,
}

/// One association for C-MOVE or C-GET of studies.
pub struct RetrieveClient {
    assoc: AsyncClientAssociation<TcpStream>,
    max_pdu: u32,
    message_id: u16,
    get: bool,
}

impl RetrieveClient {
    /// Opens an association for C-MOVE (`get` false) or C-GET (`get` true: also proposes every
    /// generated storage class with the SCP role, to receive the C-STOREs on the association).
    pub async fn connect(addr: &str, calling: &str, called: &str, get: bool) -> anyhow::Result<Self> {
        let model = if get { STUDY_ROOT_GET } else { STUDY_ROOT_MOVE };
        let mut options = dicom_ul::ClientAssociationOptions::new()
            .calling_ae_title(calling)
            .called_ae_title(called)
            .max_pdu_length(OUR_MAX_PDU)
            .read_timeout(Duration::from_secs(600))
            .with_presentation_context(model, vec![EXPLICIT_VR_LE]);
        if get {
            for class in GENERATED_STORAGE_CLASSES {
                options = options
                    .with_presentation_context(*class, vec![EXPLICIT_VR_LE])
                    .with_role_selection(*class, false, true);
            }
        }
        let mut assoc = options.establish_async(addr).await?;
        assoc.inner_stream().set_nodelay(true)?;
        let max_pdu = assoc.acceptor_max_pdu_length();
        let max_pdu = if max_pdu == 0 { 1 << 20 } else { max_pdu };
        Ok(Self { assoc, max_pdu, message_id: 0, get })
    }

    /// Retrieves one study: C-MOVE to `destination`, or C-GET (then `destination` is unused).
    pub async fn retrieve(&mut self, study: &str, destination: &str) -> anyhow::Result<Retrieved> {
        let model = if self.get { STUDY_ROOT_GET } else { STUDY_ROOT_MOVE };
        let pc = self
            .assoc
            .presentation_contexts()
            .iter()
            .find(|c| c.abstract_syntax == model)
            .map(|c| c.id)
            .ok_or_else(|| anyhow::anyhow!("the archive accepted no context for {model}"))?;
        let ts = TransferSyntaxRegistry.get(EXPLICIT_VR_LE).expect("registered");
        let mut identifier = InMemDicomObject::new_empty();
        identifier.put(DataElement::new(Tag(0x0008, 0x0052), VR::CS, PrimitiveValue::from("STUDY")));
        identifier.put(DataElement::new(Tag(0x0020, 0x000D), VR::UI, PrimitiveValue::from(study)));
        let mut data = Vec::new();
        identifier.write_dataset_with_ts(&mut data, ts)?;
        self.message_id = self.message_id.wrapping_add(1);
        let command = if self.get {
            Message::from(CGetRq {
                message_id: self.message_id,
                affected_sop_class: model.into(),
                priority: Priority::Medium,
            })
            .encode()
        } else {
            Message::from(CMoveRq {
                message_id: self.message_id,
                affected_sop_class: model.into(),
                priority: Priority::Medium,
                move_destination: destination.into(),
            })
            .encode()
        };
        let started = Instant::now();
        for pdu in pdus(pc, &command, Some(&data), self.max_pdu) {
            self.assoc.send(&pdu).await?;
        }
        let mut reader = PduReader::new();
        let mut out = Vec::new();
        let (mut instances, mut bytes) = (0u64, 0u64);
        loop {
            let stream = self.assoc.inner_stream();
            let m = match reader.next(stream).await? {
                Incoming::Message(m) => m,
                Incoming::Release | Incoming::Ended => {
                    anyhow::bail!("the archive ended the association during the retrieve")
                }
            };
            {
                let vpc = m.presentation_context_id;
                let msg = Message::decode(&m.command)?;
                if let Message::CStoreRq(rq) = &msg {
                    instances += 1;
                    bytes += m.dataset.as_ref().map(|d| d.len() as u64).unwrap_or(0);
                    write_message(stream, &mut out, vpc, &store_rsp(rq), self.max_pdu).await?;
                    continue;
                }
                let status = msg.status().unwrap_or(0xC000);
                match dimse::status::kind(status) {
                    dimse::status::StatusKind::Pending => {}
                    dimse::status::StatusKind::Success | dimse::status::StatusKind::Warning => {
                        let cs = dimse::command::CommandSet::decode(&m.command)?;
                        let n = |e: u16| cs.us(e).ok().flatten().unwrap_or(0) as u64;
                        return Ok(Retrieved {
                            completed: n(0x1021),
                            failed: n(0x1022),
                            instances,
                            bytes,
                            elapsed: started.elapsed(),
                        });
                    }
                    _ => anyhow::bail!("the retrieve of study {study} ended with status {status:04X}"),
                }
            }
        }
    }

    /// Releases the association.
    pub async fn release(self) {
        let _ = self.assoc.release().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{DatasetGenerator, StudySpec};

    #[test]
    fn dataset_of_strips_the_file_meta() {
        let inst = DatasetGenerator::new(3).study(&StudySpec::tiny("CT", 1, 1)).remove(0);
        let ds = dataset_of(&inst.bytes).unwrap();
        let ts = TransferSyntaxRegistry.get(EXPLICIT_VR_LE).unwrap();
        let obj = InMemDicomObject::read_dataset_with_ts(ds, ts).unwrap();
        let sop = obj.element(Tag(0x0008, 0x0018)).unwrap().to_str().unwrap();
        assert_eq!(sop.trim_end_matches('\0'), inst.sop_instance);
        assert!(dataset_of(b"not dicom").is_err());
    }

    #[tokio::test]
    async fn the_pdu_reader_assembles_fragments_and_several_messages_per_pdu() {
        let command = Message::from(CStoreRsp {
            message_id_being_responded_to: 1,
            affected_sop_class: Some("1.2".into()),
            affected_sop_instance: Some("1.2.3".into()),
            status: 0,
            error_comment: None,
        })
        .encode();
        let mut wire = Vec::new();
        // Two complete command-only messages in ONE PDU (two PDV items).
        let item = |pc: u8, data: &[u8]| {
            let mut v = ((data.len() + 2) as u32).to_be_bytes().to_vec();
            v.extend_from_slice(&[pc, 0b11]);
            v.extend_from_slice(data);
            v
        };
        let items = [item(1, &command), item(3, &command)].concat();
        wire.extend_from_slice(&[0x04, 0]);
        wire.extend_from_slice(&(items.len() as u32).to_be_bytes());
        wire.extend_from_slice(&items);
        // Then a message fragmented over small PDUs, then a release request.
        dimse::pdv::encode_pdus(&mut wire, 5, true, &command, 40);
        wire.extend_from_slice(&[0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0]);
        let mut stream = &wire[..];
        let mut reader = PduReader::new();
        let mut pcs = Vec::new();
        loop {
            match reader.next(&mut stream).await.unwrap() {
                Incoming::Message(m) => {
                    assert_eq!(m.command, command);
                    pcs.push(m.presentation_context_id);
                }
                Incoming::Release => break,
                Incoming::Ended => panic!("ended before the release request"),
            }
        }
        assert_eq!(pcs, [1, 3, 5]);
        assert!(matches!(reader.next(&mut stream).await.unwrap(), Incoming::Ended));
    }

    #[test]
    fn small_messages_go_in_one_pdu_large_ones_in_fragments() {
        assert_eq!(pdus(1, &[0u8; 100], Some(&[0u8; 200]), 16384).len(), 1);
        let many = pdus(1, &[0u8; 100], Some(&vec![0u8; 100_000]), 16384);
        assert!(many.len() > 6);
    }
}
