//! `vna-dataset`: writes a deterministic synthetic data set as Part-10 files, for benchmarks
//! that drive archives with external tools (dcmtk's storescu, curl).
//!
//! usage: vna-dataset OUT_DIR [--ct-instances N] [--seed S] [--split K] [--per-study P]
//!                    [--tiny N] [--cr N] [--dx N] [--us N] [--us-frames F] [--us-rgb 0|1]
//! With --split K the files are spread over K subdirectories (one per concurrent client);
//! CT studies hold P instances each (default 250). `--tiny N` adds N small metadata-heavy
//! instances (studies of 2 series × 5), `--cr`/`--dx N` N single-image studies of
//! 3000×2500×16 bit, `--us N` N multi-frame ultrasound studies (F frames of 640×480, RGB
//! unless `--us-rgb 0`).

use anyhow::Context;
use std::path::PathBuf;
use vna_benches::dataset::{DatasetGenerator, StudySpec};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(
        args.next().context("usage: vna-dataset OUT_DIR [--ct-instances N] [--seed S] [--split K] [--per-study P]")?,
    );
    let (mut count, mut seed, mut split, mut per_study) = (1000u32, 1u64, 1usize, 250u32);
    let (mut tiny, mut cr, mut dx, mut us, mut us_frames, mut us_rgb) = (0u32, 0u32, 0u32, 0u32, 30u32, true);
    while let Some(flag) = args.next() {
        let value = args.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--ct-instances" => count = value.parse()?,
            "--seed" => seed = value.parse()?,
            "--split" => split = value.parse::<usize>()?.max(1),
            "--per-study" => per_study = value.parse::<u32>()?.max(1),
            "--tiny" => tiny = value.parse()?,
            "--cr" => cr = value.parse()?,
            "--dx" => dx = value.parse()?,
            "--us" => us = value.parse()?,
            "--us-frames" => us_frames = value.parse()?,
            "--us-rgb" => us_rgb = value != "0",
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    let mut generator = DatasetGenerator::new(seed);
    let per_study = per_study.min(count.max(1));
    let mut written = 0u32;
    let mut bytes = 0u64;
    let mut write = |inst: vna_benches::dataset::SyntheticInstance, written: &mut u32| -> anyhow::Result<()> {
        let dir = out.join(format!("part{}", *written as usize % split));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("{}.dcm", inst.sop_instance)), &inst.bytes)?;
        bytes += inst.bytes.len() as u64;
        *written += 1;
        Ok(())
    };
    while written < count {
        let n = per_study.min(count - written);
        for inst in generator.study(&StudySpec::ct(n)) {
            write(inst, &mut written)?;
        }
    }
    let mut left = tiny;
    while left > 0 {
        let n = left.min(10);
        let modality = if left.is_multiple_of(20) { "MR" } else { "CT" };
        for inst in generator.study(&StudySpec::tiny(modality, 2, n.div_ceil(2))).into_iter().take(n as usize) {
            write(inst, &mut written)?;
        }
        left -= n;
    }
    let specs = [(cr, StudySpec::cr()), (dx, StudySpec::dx()), (us, StudySpec::us(us_frames, us_rgb))];
    for (n, spec) in specs {
        for _ in 0..n {
            for inst in generator.study(&spec) {
                write(inst, &mut written)?;
            }
        }
    }
    println!("wrote {written} instances ({:.1} MiB) to {}", bytes as f64 / (1 << 20) as f64, out.display());
    Ok(())
}
