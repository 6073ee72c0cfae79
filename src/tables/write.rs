//! Writing the tables as files: `<table>.parquet`, `<table>.arrow` (Arrow IPC file) or
//! `<table>.csv`, one per table.

use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::Tables;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Parquet,
    Arrow,
    Csv,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Arrow => "arrow",
            Format::Csv => "csv",
        }
    }
}

/// Writes every table into `dir` (created if missing). Each file is written beside its final
/// name and renamed into place, so a reader never sees half a table.
pub fn write_tables(tables: &Tables, dir: &Path, format: Format) -> anyhow::Result<Vec<PathBuf>> {
    fs_err::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (name, frame) in tables.named() {
        let path = dir.join(format!("{name}.{}", format.extension()));
        let part = dir.join(format!(".{name}.{}.part", format.extension()));
        let mut frame = match format {
            Format::Csv => super::with_text_times(frame)?,
            _ => frame.clone(),
        };
        let file = fs_err::File::create(&part)?;
        let result = match format {
            Format::Parquet => ParquetWriter::new(file).finish(&mut frame).map(|_| ()),
            Format::Arrow => polars_io::ipc::IpcWriter::new(file).finish(&mut frame),
            Format::Csv => CsvWriter::new(file).include_header(true).finish(&mut frame),
        };
        result.map_err(|e| anyhow::anyhow!("writing `{}`: {e}", path.display()))?;
        fs_err::rename(&part, &path)?;
        written.push(path);
    }
    Ok(written)
}
