//! `vna-dataset`: writes a deterministic synthetic data set as Part-10 files, for benchmarks
//! that drive archives with external tools (dcmtk's storescu, curl).
//!
//! usage: vna-dataset OUT_DIR [--ct-instances N] [--seed S] [--split K] [--per-study P]
//! With --split K the files are spread over K subdirectories (one per concurrent client);
//! studies hold P instances each (default 250).

use anyhow::Context;
use std::path::PathBuf;
use vna_benches::dataset::{DatasetGenerator, StudySpec};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(
        args.next().context("usage: vna-dataset OUT_DIR [--ct-instances N] [--seed S] [--split K] [--per-study P]")?,
    );
    let (mut count, mut seed, mut split, mut per_study) = (1000u32, 1u64, 1usize, 250u32);
    while let Some(flag) = args.next() {
        let value = args.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--ct-instances" => count = value.parse()?,
            "--seed" => seed = value.parse()?,
            "--split" => split = value.parse::<usize>()?.max(1),
            "--per-study" => per_study = value.parse::<u32>()?.max(1),
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    let mut generator = DatasetGenerator::new(seed);
    let per_study = per_study.min(count.max(1));
    let mut written = 0u32;
    let mut bytes = 0u64;
    while written < count {
        let n = per_study.min(count - written);
        for inst in generator.study(&StudySpec::ct(n)) {
            let dir = out.join(format!("part{}", written as usize % split));
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join(format!("{}.dcm", inst.sop_instance)), &inst.bytes)?;
            bytes += inst.bytes.len() as u64;
            written += 1;
        }
    }
    println!("wrote {written} CT instances ({:.1} MiB) to {}", bytes as f64 / (1 << 20) as f64, out.display());
    Ok(())
}
