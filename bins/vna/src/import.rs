//! `vna import`: bulk ingest of folder trees, with a progress bar and a summary.

use crate::config::VnaConfig;
use crate::wiring;
use archive_core::ingest::{IngestInput, IngestStatus};
use archive_core::model::Source;
use bytes::Bytes;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `vna import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Folders (or single files) to import, walked recursively.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Files ingested concurrently (they share catalog syncs).
    #[arg(long, default_value_t = 8)]
    pub jobs: usize,
    /// Name recorded as the source of the imported objects (audit and series records); when a
    /// `[[sources]]` profile has this name, its issuer of patient ID and coercion rules apply.
    #[arg(long, default_value = "import")]
    pub source: String,
    /// Do not draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Default)]
struct Summary {
    imported: u64,
    duplicates: u64,
    replaced: u64,
    bytes: u64,
    rejected: Vec<(PathBuf, String)>,
}

fn collect_files(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for root in paths {
        for entry in walkdir::WalkDir::new(root).follow_links(true).sort_by_file_name() {
            match entry {
                Ok(e) if e.file_type().is_file() => files.push(e.into_path()),
                Ok(_) => {}
                Err(e) => {
                    let path = e.path().map(|p| p.to_path_buf()).unwrap_or_else(|| root.clone());
                    errors.push((path, format!("cannot read: {e}")));
                }
            }
        }
    }
    (files, errors)
}

/// Runs the import; exit status 1 when any file was rejected.
pub async fn run(config: VnaConfig, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let (files, walk_errors) = collect_files(&args.paths);
    let (archive, _) = wiring::open_archive(config).await?;
    let bar = if args.no_progress { ProgressBar::hidden() } else { ProgressBar::new(files.len() as u64) };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} files {per_sec} eta {eta} {msg}",
        )
        .expect("valid template"),
    );
    let mut summary = Summary { rejected: walk_errors, ..Default::default() };
    let jobs = args.jobs.max(1);
    let ingest = archive.ingest().clone();
    let source_name = args.source.clone();
    let mut results = futures::stream::iter(files)
        .map(|path| {
            let ingest = ingest.clone();
            let source = Source { actor: source_name.clone(), address: path.display().to_string() };
            async move {
                let outcome = match tokio::fs::read(&path).await {
                    Ok(bytes) => {
                        ingest.ingest(IngestInput::Part10(Bytes::from(bytes)), source).await.map_err(|e| e.to_string())
                    }
                    Err(e) => Err(format!("cannot read: {e}")),
                };
                (path, outcome)
            }
        })
        .buffer_unordered(jobs);
    while let Some((path, outcome)) = results.next().await {
        match outcome {
            Ok(r) => match r.status {
                IngestStatus::Stored => {
                    summary.imported += 1;
                    summary.bytes += r.size;
                }
                IngestStatus::Duplicate => summary.duplicates += 1,
                IngestStatus::Replaced => {
                    summary.replaced += 1;
                    summary.bytes += r.size;
                }
            },
            Err(reason) => {
                bar.suspend(|| eprintln!("rejected {}: {reason}", path.display()));
                summary.rejected.push((path, reason));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    archive.close().await?;

    let elapsed = bar.elapsed().as_secs_f64().max(1e-9);
    println!(
        "imported {} ({:.1} MiB), duplicates {}, replaced {}, rejected {} in {:.1} s ({:.0} files/s)",
        summary.imported,
        summary.bytes as f64 / (1 << 20) as f64,
        summary.duplicates,
        summary.replaced,
        summary.rejected.len(),
        elapsed,
        (summary.imported + summary.duplicates + summary.replaced + summary.rejected.len() as u64) as f64 / elapsed,
    );
    if summary.rejected.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        println!("rejected files:");
        for (path, reason) in &summary.rejected {
            println!("  {}: {reason}", path.display());
        }
        Ok(ExitCode::from(1))
    }
}
