//! The DIMSE listener: accepts connections, caps concurrent associations, and drains
//! in-flight associations on shutdown.

use crate::access::CallingAeFilter;
use crate::association;
use crate::config::{DicomConfig, RemoteAe};
use crate::metrics::DimseMetrics;
use archive_core::Archive;
use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason, AssociationRJSource,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Runtime settings of the DIMSE server.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// The archive's AE title.
    pub ae_title: String,
    /// Which callers are accepted.
    pub callers: CallingAeFilter,
    /// Most associations served at once.
    pub max_associations: usize,
    /// Largest PDU received.
    pub max_pdu_length: u32,
    /// Silence after which an association is aborted.
    pub idle_timeout: Duration,
    /// Time allowed to the association request (ARTIM).
    pub artim_timeout: Duration,
    /// Time in-flight associations get to finish at shutdown.
    pub drain_timeout: Duration,
    /// Largest data set accepted in one message.
    pub max_dataset_len: usize,
    /// Known remote AEs: C-MOVE destinations and storage commitment report receivers.
    pub remote_aes: Vec<RemoteAe>,
}

impl ServerSettings {
    /// Settings from the `[dicom]` section.
    pub fn from_config(d: &DicomConfig) -> Self {
        let callers = if d.restrict_to_remote_aes {
            CallingAeFilter::only(d.remote_aes.iter().map(|r| r.ae_title.clone()))
        } else {
            CallingAeFilter::open()
        };
        Self {
            ae_title: d.ae_title.clone(),
            callers,
            max_associations: d.max_associations,
            max_pdu_length: d.max_pdu_length,
            idle_timeout: Duration::from_secs(d.idle_timeout_secs),
            artim_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            max_dataset_len: d.max_dataset_mb << 20,
            remote_aes: d.remote_aes.clone(),
        }
    }

    /// A remote AE by title.
    pub fn remote_ae(&self, ae_title: &str) -> Option<&RemoteAe> {
        self.remote_aes.iter().find(|r| r.ae_title == ae_title.trim())
    }
}

/// What every association shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) archive: Archive,
    pub(crate) settings: ServerSettings,
    pub(crate) metrics: DimseMetrics,
}

/// The DIMSE server.
#[derive(Debug, Clone)]
pub struct DimseServer {
    shared: Arc<Shared>,
}

impl DimseServer {
    /// Creates the server; its metrics join the archive's registry.
    pub fn new(archive: Archive, settings: ServerSettings) -> Self {
        let metrics = DimseMetrics::register(archive.metrics().registry());
        Self { shared: Arc::new(Shared { archive, settings, metrics }) }
    }

    /// Serves associations until `shutdown` resolves, then waits (bounded) for the open ones.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        crate::commitment::resume_outbox(&self.shared.archive, &self.shared.settings);
        let max = self.shared.settings.max_associations;
        let slots = Arc::new(Semaphore::new(max));
        tokio::pin!(shutdown);
        loop {
            let (mut socket, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut shutdown => break,
            };
            let _ = socket.set_nodelay(true);
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                self.shared.metrics.associations.with_label_values(&["over_limit"]).inc();
                tracing::warn!(%peer, max, "association refused: too many associations");
                tokio::spawn(async move {
                    let _ = socket.write_all(&over_limit_rejection()).await;
                    let _ = socket.shutdown().await;
                });
                continue;
            };
            let shared = self.shared.clone();
            tokio::spawn(async move {
                association::serve(shared, socket, peer).await;
                drop(permit);
            });
        }
        tracing::info!("dimse: no longer accepting associations, draining");
        let drain = slots.acquire_many(max as u32);
        if tokio::time::timeout(self.shared.settings.drain_timeout, drain).await.is_err() {
            tracing::warn!("dimse: associations still open after the drain timeout");
        }
        Ok(())
    }
}

/// An A-ASSOCIATE-RJ "rejected-transient, local limit exceeded" PDU.
fn over_limit_rejection() -> Vec<u8> {
    let pdu = dicom_ul::Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        ),
    });
    let mut buf = Vec::new();
    let _ = dicom_ul::write_pdu(&mut buf, &pdu);
    buf
}
