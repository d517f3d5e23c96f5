//! Sending DIMSE messages straight onto an association's TCP stream.
//!
//! `dicom_ul` builds each PDU as a value and serializes it through nested length-prefixed
//! buffers, copying every data set byte several times; for retrievals of large images that
//! copying was half of vna's CPU time. Here a message is framed by [`dimse::pdv::encode_pdus`]
//! into one reusable buffer (one copy) and written in large writes. The stream must be at a PDU
//! boundary, which it always is between `dicom_ul` sends: they write whole PDUs.

use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Bytes gathered before each write to the socket.
const WRITE_BATCH: usize = 256 * 1024;

/// Frames and writes DIMSE messages, reusing one buffer across messages.
#[derive(Debug, Default)]
pub(crate) struct MessageWriter {
    buf: Vec<u8>,
}

/// Why a message could not be written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The peer took no bytes for the whole timeout.
    #[error("the peer took nothing for {0:?}")]
    Timeout(Duration),
}

impl MessageWriter {
    /// Writes a command set and, when given, its data set as P-DATA-TF PDUs within the peer's
    /// maximum PDU length; each write must progress within `timeout`.
    pub(crate) async fn write<W: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut W,
        pc: u8,
        command: &[u8],
        dataset: Option<&[u8]>,
        peer_max_pdu: u32,
        timeout: Duration,
    ) -> Result<(), WriteError> {
        self.buf.clear();
        let peer_max_pdu = capped(peer_max_pdu);
        dimse::pdv::encode_pdus(&mut self.buf, pc, true, command, peer_max_pdu);
        if let Some(data) = dataset {
            // Whole fragments of at most WRITE_BATCH bytes at a time: the command goes out with
            // the first of them, and the buffer never holds a whole large image.
            let step = fragment_aligned_step(peer_max_pdu);
            let mut chunks = data.chunks(step).peekable();
            if chunks.peek().is_none() {
                dimse::pdv::encode_pdus(&mut self.buf, pc, false, data, peer_max_pdu);
            }
            while let Some(chunk) = chunks.next() {
                let last = chunks.peek().is_none();
                encode_data_chunk(&mut self.buf, pc, chunk, last, peer_max_pdu);
                if self.buf.len() >= WRITE_BATCH {
                    write_timed(stream, &self.buf, timeout).await?;
                    self.buf.clear();
                }
            }
        }
        if !self.buf.is_empty() {
            write_timed(stream, &self.buf, timeout).await?;
            self.buf.clear();
        }
        // Keep a large image's buffer from staying allocated for an idle association.
        if self.buf.capacity() > 4 * WRITE_BATCH {
            self.buf = Vec::new();
        }
        Ok(())
    }
}

/// The PDU size this writer uses: the peer's maximum, but no more than [`WRITE_BATCH`] of
/// payload (a peer announcing no limit, or gigabytes, still gets PDUs a buffer can hold;
/// smaller PDUs are always allowed).
fn capped(peer_max_pdu: u32) -> u32 {
    let cap = (WRITE_BATCH + dimse::pdv::FRAGMENT_OVERHEAD) as u32;
    if peer_max_pdu == 0 {
        cap
    } else {
        peer_max_pdu.min(cap)
    }
}

/// A multiple of the fragment payload near [`WRITE_BATCH`], so that splitting the data set into
/// chunks of this size and fragmenting each gives the same fragments as fragmenting it whole.
fn fragment_aligned_step(peer_max_pdu: u32) -> usize {
    let payload = dimse::pdv::max_fragment_payload(peer_max_pdu);
    payload * (WRITE_BATCH / payload).max(1)
}

/// Fragments one chunk of a data set; only the last chunk's last fragment is flagged last.
fn encode_data_chunk(out: &mut Vec<u8>, pc: u8, chunk: &[u8], last_chunk: bool, peer_max_pdu: u32) {
    for f in dimse::pdv::fragments(pc, false, chunk, peer_max_pdu) {
        let is_last = last_chunk && f.is_last;
        out.extend_from_slice(&dimse::pdv::pdata_header(pc, false, is_last, f.data.len()));
        out.extend_from_slice(f.data);
    }
}

async fn write_timed<W: AsyncWrite + Unpin>(stream: &mut W, bytes: &[u8], timeout: Duration) -> Result<(), WriteError> {
    match tokio::time::timeout(timeout, stream.write_all(bytes)).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(WriteError::Timeout(timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_ul::pdu::{PDataValueType, Pdu};

    /// Reads back every PDU `bytes` holds with dicom_ul's own reader.
    fn read_all(mut bytes: &[u8]) -> Vec<(u8, bool, bool, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let len = 6 + u32::from_be_bytes(bytes[2..6].try_into().unwrap()) as usize;
            let pdu = dicom_ul::pdu::read_pdu(&bytes[..len], dicom_ul::pdu::MAXIMUM_PDU_SIZE, true).unwrap().unwrap();
            let Pdu::PData { data } = pdu else { panic!("not P-DATA: {pdu:?}") };
            for v in data {
                out.push((v.presentation_context_id, v.value_type == PDataValueType::Command, v.is_last, v.data));
            }
            bytes = &bytes[len..];
        }
        out
    }

    async fn written(command: &[u8], dataset: Option<&[u8]>, max: u32) -> Vec<(u8, bool, bool, Vec<u8>)> {
        let mut out = Vec::new();
        MessageWriter::default().write(&mut out, 3, command, dataset, max, Duration::from_secs(5)).await.unwrap();
        read_all(&out)
    }

    #[tokio::test]
    async fn messages_read_back_as_the_fragments_dicom_ul_expects() {
        let command = vec![7u8; 150];
        let dataset: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        for max in [16_384u32, 65_536] {
            let got = written(&command, Some(&dataset), max).await;
            let expected: Vec<_> = dimse::pdv::fragments(3, true, &command, max)
                .chain(dimse::pdv::fragments(3, false, &dataset, max))
                .map(|f| (3u8, f.is_command, f.is_last, f.data.to_vec()))
                .collect();
            assert_eq!(got, expected, "max PDU {max}");
        }
    }

    #[tokio::test]
    async fn a_peer_without_a_limit_still_gets_bounded_pdus() {
        let command = vec![7u8; 150];
        let dataset: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        for max in [0u32, 1 << 20, dicom_ul::pdu::MAXIMUM_PDU_SIZE] {
            let got = written(&command, Some(&dataset), max).await;
            assert!(got.iter().all(|f| f.3.len() <= WRITE_BATCH), "max PDU {max}");
            let data: Vec<u8> = got.iter().filter(|f| !f.1).flat_map(|f| f.3.clone()).collect();
            assert_eq!(data, dataset, "max PDU {max}");
            let lasts: Vec<bool> = got.iter().filter(|f| !f.1).map(|f| f.2).collect();
            assert_eq!(lasts.iter().filter(|l| **l).count(), 1);
            assert!(lasts.last().copied().unwrap_or(false));
            assert_eq!(got.iter().filter(|f| f.1).count(), 1, "the command in one fragment");
        }
    }

    #[tokio::test]
    async fn a_command_alone_and_an_empty_data_set_are_framed() {
        let got = written(&[1, 2, 3], None, 16_384).await;
        assert_eq!(got, vec![(3, true, true, vec![1, 2, 3])]);
        let got = written(&[1, 2, 3], Some(&[]), 16_384).await;
        assert_eq!(got, vec![(3, true, true, vec![1, 2, 3]), (3, false, true, vec![])]);
    }
}
