//! `vna serve`: opens the archive and runs its servers until SIGINT or SIGTERM.

use crate::wiring;
use archive_core::config::VnaConfig;
use archive_core::Archive;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

/// Runs the archive until a shutdown signal, then drains and syncs.
pub async fn run(config: VnaConfig) -> anyhow::Result<()> {
    let http_addr = config.http_listen()?;
    let data_dir = config.data_dir.clone();
    let (archive, recovery) = wiring::open_archive(config).await?;
    tracing::info!(
        data_dir = %data_dir.display(),
        removed = recovery.removed,
        "archive opened"
    );
    let listener = TcpListener::bind(http_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "http listening");
    let app = router(archive.clone());
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    tracing::info!("shutting down: waiting for pending commits");
    archive.close().await?;
    tracing::info!("stopped");
    Ok(())
}

fn router(archive: Archive) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(archive)
}

async fn readyz(State(archive): State<Archive>) -> impl IntoResponse {
    match archive_core::catalog::Catalog::stats(archive.catalog()) {
        Ok(_) => (StatusCode::OK, "ready"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "catalog unavailable"),
    }
}

async fn metrics(State(archive): State<Archive>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], archive.metrics().render())
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
