//! `vna serve`: opens the archive and runs its servers until SIGINT or SIGTERM.

use crate::config::VnaConfig;
use crate::wiring;
use std::future::IntoFuture;
use tokio::net::TcpListener;

/// Runs the archive until a shutdown signal, then drains and syncs.
pub async fn run(config: VnaConfig) -> anyhow::Result<()> {
    let http_addr = config.http.listen_addr()?;
    let dicom_addr = config.dicom.listen_addr()?;
    let data_dir = config.data_dir.clone();
    let settings = dimse_scp::ServerSettings::from_config(&config.dicom);
    let http_settings = dicomweb::HttpSettings::from_config(&config.http, &config.dicom.ae_title, &data_dir);
    let pull_config = config.pull.clone();
    dicomweb::spool::prepare_dir(&http_settings.spool_dir)?;
    let (archive, recovery) = wiring::open_archive(config).await?;
    tracing::info!(data_dir = %data_dir.display(), removed = recovery.removed, "archive opened");
    archive.start_background()?;
    let policy = policy::scheduler::PolicyEngine::open(std::sync::Arc::new(archive.clone()))
        .await
        .map_err(|e| anyhow::anyhow!("retention rules: {e}"))?;
    policy.start();
    tracing::info!(digest = %policy.rules().digest, rules = policy.rules().rules.len(), "retention rules in force");
    let pulls = pull::Pulls::open(archive.clone(), pull_config, &settings.ae_title)?;

    let dicom_listener = TcpListener::bind(dicom_addr).await?;
    let http_listener = TcpListener::bind(http_addr).await?;
    tracing::info!(addr = %dicom_listener.local_addr()?, ae_title = %settings.ae_title, "dicom listening");
    tracing::info!(addr = %http_listener.local_addr()?, "http listening");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let dimse = dimse_scp::DimseServer::new(archive.clone(), settings);
    let dimse_task = tokio::spawn(dimse.run(dicom_listener, stopped(stop_rx.clone())));
    let admin = admin_api::AdminState::new(archive.clone(), Some(policy), Some(pulls.clone()))?;
    let app = dicomweb::router_with(archive.clone(), http_settings, admin_api::router(admin));
    let http_task = tokio::spawn(
        axum::serve(http_listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
            .with_graceful_shutdown(stopped(stop_rx))
            .into_future(),
    );

    // Pulls resume once the DIMSE server listens: a resumed C-MOVE delivers there.
    let resumed = pulls.resume();
    if resumed > 0 {
        tracing::info!(jobs = resumed, "pulls resumed");
    }

    shutdown_signal().await;
    // Pulls stop first (they resume at the next start), while the servers still take what
    // a C-MOVE in flight delivers.
    pulls.stop(std::time::Duration::from_secs(5)).await;
    let _ = stop_tx.send(true);
    dimse_task.await??;
    http_task.await??;
    tracing::info!("shutting down: waiting for pending commits");
    archive.close().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}
