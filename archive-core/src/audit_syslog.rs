//! Forwarding the audit trail to an audit record repository: each record as a DICOM audit
//! message (PS3.15 A.5 XML) in an RFC 5424 syslog message over TCP, octet-counted (RFC 6587),
//! in chain order, each exactly once per repository (the last sequence number sent is kept in
//! a file, written after the repository's TCP stream accepted the bytes).
//!
//! TLS (RFC 5425) comes with the security work; until then use a local relay or a trusted network.

use crate::audit::{AuditAction, AuditOutcome, AuditRecord};
use crate::catalog::Catalog;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Where and how to forward.
#[derive(Debug, Clone)]
pub struct SyslogTarget {
    /// `host:port` of the repository's TCP syslog listener.
    pub address: String,
    /// APP-NAME of the syslog header and AuditSourceID of the messages.
    pub source_id: String,
    /// File holding the last sequence number forwarded.
    pub state_file: PathBuf,
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' && c != '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// The DICOM event (code, meaning) and EventActionCode of an action (PS3.15 A.5.3).
pub fn dicom_event(action: AuditAction) -> (&'static str, &'static str, &'static str) {
    use AuditAction::*;
    match action {
        InstanceStored | InstanceReplaced | InstanceConflictRejected => ("110104", "DICOM Instances Transferred", "C"),
        InstancesMigrated | InstancesRecalled => ("110104", "DICOM Instances Transferred", "U"),
        InstancesRetrieved => ("110104", "DICOM Instances Transferred", "R"),
        DeletionRequested | DeletionCancelled | DeletionRefused | InstancesDeleted | DeletionCompleted
        | InstancesRejected => ("110103", "DICOM Instances Accessed", "D"),
        Query => ("110112", "Query", "E"),
        AuditExported => ("110101", "Audit Log Used", "R"),
        IntegrityFailure => ("110113", "Security Alert", "E"),
        LegalHoldSet | LegalHoldReleased | PolicyChanged | PolicyRefused => ("110100", "Application Activity", "E"),
        PatientLinked | PatientUnlinked => ("110110", "Patient Record", "U"),
        MigrationPull => ("110104", "DICOM Instances Transferred", "C"),
    }
}

/// One record as a DICOM audit message (XML).
pub fn audit_message_xml(r: &AuditRecord, source_id: &str) -> String {
    let e = &r.event;
    let (code, meaning, action_code) = dicom_event(e.action);
    let outcome = match e.outcome {
        AuditOutcome::Success => "0",
        AuditOutcome::MinorFailure => "4",
        AuditOutcome::SeriousFailure => "8",
    };
    let time = e.time.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let action_name =
        serde_json::to_value(e.action).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><AuditMessage>");
    x.push_str(&format!(
        "<EventIdentification EventActionCode=\"{action_code}\" EventDateTime=\"{time}\" EventOutcomeIndicator=\"{outcome}\">\
<EventID csd-code=\"{code}\" codeSystemName=\"DCM\" originalText=\"{meaning}\"/>\
<EventTypeCode csd-code=\"{}\" codeSystemName=\"99VNA\" originalText=\"{}\"/>",
        xml_escape(&action_name),
        xml_escape(&action_name)
    ));
    if let Some(reason) = &e.reason {
        x.push_str(&format!("<EventOutcomeDescription>{}</EventOutcomeDescription>", xml_escape(reason)));
    }
    x.push_str("</EventIdentification>");
    x.push_str(&format!(
        "<ActiveParticipant UserID=\"{}\" UserIsRequestor=\"true\" NetworkAccessPointID=\"{}\" NetworkAccessPointTypeCode=\"2\"/>",
        xml_escape(&e.actor),
        xml_escape(&e.actor_address)
    ));
    x.push_str(&format!("<AuditSourceIdentification AuditSourceID=\"{}\"/>", xml_escape(source_id)));
    let mut patients: Vec<&str> = e.objects.iter().map(|o| o.patient.as_str()).filter(|p| !p.is_empty()).collect();
    patients.dedup();
    for p in patients {
        x.push_str(&format!(
            "<ParticipantObjectIdentification ParticipantObjectID=\"{}\" ParticipantObjectTypeCode=\"1\" ParticipantObjectTypeCodeRole=\"1\">\
<ParticipantObjectIDTypeCode csd-code=\"2\" codeSystemName=\"RFC-3881\" originalText=\"Patient Number\"/></ParticipantObjectIdentification>",
            xml_escape(p)
        ));
    }
    let mut studies: Vec<&str> = e.objects.iter().map(|o| o.study.as_str()).filter(|s| !s.is_empty()).collect();
    studies.sort_unstable();
    studies.dedup();
    for s in studies {
        let instances: Vec<&crate::audit::AuditObject> =
            e.objects.iter().filter(|o| o.study == s && o.sop_instance.is_some()).collect();
        x.push_str(&format!(
            "<ParticipantObjectIdentification ParticipantObjectID=\"{}\" ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"3\">\
<ParticipantObjectIDTypeCode csd-code=\"110180\" codeSystemName=\"DCM\" originalText=\"Study Instance UID\"/>",
            xml_escape(s)
        ));
        if !instances.is_empty() {
            x.push_str(&format!(
                "<ParticipantObjectDescription><Accession/><SOPClass NumberOfInstances=\"{}\">",
                instances.len()
            ));
            for i in instances {
                x.push_str(&format!("<Instance UID=\"{}\"/>", xml_escape(i.sop_instance.as_deref().unwrap_or(""))));
            }
            x.push_str("</SOPClass></ParticipantObjectDescription>");
        }
        x.push_str("</ParticipantObjectIdentification>");
    }
    // The chain position and hash, so a repository can check the copy against the archive.
    x.push_str(&format!(
        "<ParticipantObjectIdentification ParticipantObjectID=\"{}\" ParticipantObjectTypeCode=\"4\">\
<ParticipantObjectIDTypeCode csd-code=\"vna-audit-record\" codeSystemName=\"99VNA\" originalText=\"audit record\"/>\
<ParticipantObjectDetail type=\"hash\" value=\"{}\"/><ParticipantObjectDetail type=\"prev_hash\" value=\"{}\"/>{}</ParticipantObjectIdentification>",
        r.seq,
        r.hash,
        r.prev_hash,
        e.detail.as_deref().map(|d| format!("<ParticipantObjectDetail type=\"detail\" value=\"{}\"/>", xml_escape(d))).unwrap_or_default()
    ));
    x.push_str("</AuditMessage>");
    x
}

/// One record as an octet-counted RFC 5424 syslog frame (facility authpriv, severity notice;
/// warning for failures).
pub fn syslog_frame(r: &AuditRecord, source_id: &str, hostname: &str) -> Vec<u8> {
    let severity = if r.event.outcome == AuditOutcome::Success { 5 } else { 4 };
    let pri = 10 * 8 + severity;
    let time = r.event.time.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let msg = format!(
        "<{pri}>1 {time} {} {} {} DICOM+RFC3881 - \u{feff}{}",
        if hostname.is_empty() { "-" } else { hostname },
        source_id,
        std::process::id(),
        audit_message_xml(r, source_id)
    );
    let mut frame = format!("{} ", msg.len()).into_bytes();
    frame.extend_from_slice(msg.as_bytes());
    frame
}

fn read_state(path: &PathBuf) -> u64 {
    std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

fn write_state(path: &PathBuf, seq: u64) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, seq.to_string())?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Sends every record after the last one forwarded; returns how many were sent.
pub async fn forward_once(catalog: &dyn Catalog, target: &SyslogTarget) -> std::io::Result<u64> {
    let last = read_state(&target.state_file);
    // A bounded page per pass: an archive that turns forwarding on late catches up page by page.
    let records = catalog.audit_page(last + 1, 5_000).map_err(|e| std::io::Error::other(e.to_string()))?;
    if records.is_empty() {
        return Ok(0);
    }
    let hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default().trim().to_string();
    let mut stream = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(&target.address))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting to the audit repository"))??;
    let mut sent = 0u64;
    let mut seq = last;
    for rec in records {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => return Err(std::io::Error::other(format!("undecodable audit record after seq {seq}: {e}"))),
        };
        stream.write_all(&syslog_frame(&rec, &target.source_id, &hostname)).await?;
        seq = rec.seq;
        sent += 1;
        if sent.is_multiple_of(256) {
            stream.flush().await?;
            write_state(&target.state_file, seq)?;
        }
    }
    stream.flush().await?;
    stream.shutdown().await?;
    write_state(&target.state_file, seq)?;
    Ok(sent)
}

/// Forwards in the background, every `every`, retrying after failures.
pub fn start(catalog: Arc<dyn Catalog>, target: SyslogTarget, every: Duration) {
    tokio::spawn(async move {
        loop {
            match forward_once(catalog.as_ref(), &target).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(records = n, to = %target.address, "audit records forwarded"),
                Err(e) => tracing::warn!(to = %target.address, error = %e, "audit forwarding failed; retrying"),
            }
            tokio::time::sleep(every).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEvent, AuditObject};
    use crate::catalog::rocks::{RocksCatalog, RocksCatalogOptions};
    use tokio::io::AsyncReadExt;

    fn event(n: u32) -> AuditEvent {
        AuditEvent {
            time: time::OffsetDateTime::now_utc(),
            action: if n.is_multiple_of(2) { AuditAction::Query } else { AuditAction::DeletionCompleted },
            actor: format!("AE<{n}>"),
            actor_address: "10.0.0.1".into(),
            objects: vec![AuditObject {
                patient: "P1^^^H".into(),
                study: "1.2.3".into(),
                sop_instance: Some("1.2.3.4".into()),
                checksum: None,
            }],
            reason: Some("retention & cleanup".into()),
            outcome: AuditOutcome::Success,
            detail: None,
        }
    }

    async fn receive(listener: &tokio::net::TcpListener) -> Vec<String> {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut all = Vec::new();
        sock.read_to_end(&mut all).await.unwrap();
        let mut out = Vec::new();
        let mut rest = &all[..];
        while !rest.is_empty() {
            let sp = rest.iter().position(|b| *b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&rest[..sp]).unwrap().parse().unwrap();
            out.push(String::from_utf8(rest[sp + 1..sp + 1 + len].to_vec()).unwrap());
            rest = &rest[sp + 1 + len..];
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forwards_each_record_once_in_order_as_dicom_audit_messages() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = RocksCatalog::open(&dir.path().join("c"), RocksCatalogOptions::default()).unwrap();
        for n in 1..=3 {
            catalog.append_audit(event(n)).await.unwrap();
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = SyslogTarget {
            address: listener.local_addr().unwrap().to_string(),
            source_id: "vna-test".into(),
            state_file: dir.path().join("forwarded"),
        };
        let (got, sent) = tokio::join!(receive(&listener), forward_once(&catalog, &target));
        assert_eq!(sent.unwrap(), 3);
        assert_eq!(got.len(), 3);
        assert!(
            got[0].starts_with("<85>1 ") && got[0].contains(" vna-test ") && got[0].contains("DICOM+RFC3881"),
            "{}",
            got[0]
        );
        assert!(got[0].contains("csd-code=\"110103\"") && got[0].contains("EventActionCode=\"D\""), "{}", got[0]);
        assert!(got[1].contains("csd-code=\"110112\""));
        assert!(got[0].contains("UserID=\"AE&lt;1&gt;\"") && got[0].contains("retention &amp; cleanup"));
        assert!(got[2].contains("ParticipantObjectID=\"3\""), "the chain position travels along");
        assert!(got[0].contains("ParticipantObjectID=\"P1^^^H\"") && got[0].contains("<Instance UID=\"1.2.3.4\"/>"));

        // Nothing new: nothing sent, no connection needed. One more: only it is sent.
        assert_eq!(forward_once(&catalog, &target).await.unwrap(), 0);
        catalog.append_audit(event(4)).await.unwrap();
        let (got, sent) = tokio::join!(receive(&listener), forward_once(&catalog, &target));
        assert_eq!((sent.unwrap(), got.len()), (1, 1));
        assert!(got[0].contains("ParticipantObjectID=\"4\""));

        // The repository is down: an error, and the record is sent when it is back.
        catalog.append_audit(event(5)).await.unwrap();
        let down = SyslogTarget { address: "127.0.0.1:1".into(), ..target.clone() };
        assert!(forward_once(&catalog, &down).await.is_err());
        let (got, _) = tokio::join!(receive(&listener), forward_once(&catalog, &target));
        assert_eq!(got.len(), 1);
        assert!(got[0].contains("ParticipantObjectID=\"5\""));
    }
}
