//! Reading tables (CSV, Parquet) with polars, rejecting what cannot be used.

use std::path::Path;

use polars::prelude::*;

use crate::error::UserError;

/// Reads a CSV or Parquet file (by extension; CSV otherwise).
pub fn read_table(path: &Path) -> Result<DataFrame, UserError> {
    let shown = path.display();
    let meta = fs_err::metadata(path).map_err(|e| {
        UserError::setup(format!("cannot read data file: {e}"))
            .with_hint("check the paths in the task file (relative to it)")
    })?;
    if meta.len() == 0 {
        return Err(UserError::setup(format!("data file `{shown}` is empty")));
    }
    let is_parquet =
        path.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet") || e.eq_ignore_ascii_case("pq"));
    let df = if is_parquet {
        let file =
            fs_err::File::open(path).map_err(|e| UserError::setup(format!("cannot read data file: {e}")))?;
        ParquetReader::new(file.into_parts().0)
            .finish()
            .map_err(|e| UserError::setup(format!("data file `{shown}` is not readable as Parquet: {e}")))?
    } else {
        let header = check_csv_header(path)?;
        CsvReadOptions::default()
            .with_has_header(true)
            .with_infer_schema_length(Some(10_000))
            .try_into_reader_with_file_path(Some(path.to_path_buf()))
            .and_then(|reader| reader.finish())
            .and_then(|df| unescaped(df, &header))
            .map_err(|e| {
                UserError::setup(format!("data file `{shown}` is not readable as CSV: {e}"))
                    .with_hint("loop-runner reads comma-separated files with a header row, or .parquet files")
            })?
    };
    if df.width() == 0 || df.height() == 0 {
        return Err(UserError::setup(format!(
            "data file `{shown}` has no rows ({} columns, {} rows)",
            df.width(),
            df.height()
        )));
    }
    Ok(df)
}

/// Reads CSV text already in memory (a file a script wrote, read by the host without following
/// links). `name` is how errors refer to it.
pub fn read_csv_bytes(bytes: Vec<u8>, name: &str) -> Result<DataFrame, String> {
    if bytes.is_empty() {
        return Err(format!("{name} is empty"));
    }
    let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let header = header_names(&String::from_utf8_lossy(first));
    let mut seen = std::collections::BTreeSet::new();
    if let Some(dup) = header.iter().find(|n| !seen.insert(n.as_str())) {
        return Err(format!("{name} has the column `{dup}` more than once"));
    }
    CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(10_000))
        .into_reader_with_file_handle(std::io::Cursor::new(bytes))
        .finish()
        .and_then(|df| unescaped(df, &header))
        .map_err(|e| format!("{name} is not a readable CSV: {e}"))
}

/// `df` with the column names the CSV header spells: polars keeps the doubled quotes of a
/// quoted name (`"a""b"` becomes `a""b`, not `a"b`), and a target so named would not be found.
fn unescaped(mut df: DataFrame, header: &[String]) -> PolarsResult<DataFrame> {
    let renames: Vec<(String, String)> = df
        .get_column_names()
        .iter()
        .zip(header)
        .filter(|(read, name)| name.contains('"') && read.as_str() == name.replace('"', "\"\""))
        .map(|(read, name)| (read.to_string(), name.clone()))
        .collect();
    for (read, name) in renames {
        df.rename(&read, name.into())?;
    }
    Ok(df)
}

/// The header's names. Duplicates are refused: polars would rename them silently, and scripts
/// would then read a different table than the user wrote.
fn check_csv_header(path: &Path) -> Result<Vec<String>, UserError> {
    use std::io::BufRead;
    let file =
        fs_err::File::open(path).map_err(|e| UserError::setup(format!("cannot read data file: {e}")))?;
    let mut first = String::new();
    std::io::BufReader::new(file)
        .read_line(&mut first)
        .map_err(|e| UserError::setup(format!("data file `{}` is not text: {e}", path.display())))?;
    let names = header_names(&first);
    let mut seen = std::collections::BTreeSet::new();
    for name in &names {
        if !seen.insert(name.as_str()) {
            return Err(UserError::setup(format!(
                "data file `{}` has the column name `{name}` more than once",
                path.display()
            ))
            .with_hint("rename the duplicate columns in the header row"));
        }
    }
    if names.iter().all(|n| n.is_empty()) {
        return Err(UserError::setup(format!("data file `{}` has an empty header row", path.display())));
    }
    Ok(names)
}

/// The names in a CSV file's first line (without a byte-order mark or the line end).
fn header_names(line: &str) -> Vec<String> {
    split_csv_line(line.trim_start_matches('\u{feff}').trim_end_matches(['\r', '\n']))
}

/// Splits one CSV line on commas, honouring double quotes.
fn split_csv_line(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// Writes a frame as CSV (header, comma-separated).
pub fn write_csv(df: &DataFrame, path: &Path) -> std::io::Result<()> {
    let mut file = fs_err::File::create(path)?;
    let mut df = df.clone();
    CsvWriter::new(&mut file)
        .include_header(true)
        .finish(&mut df)
        .map_err(|e| std::io::Error::other(format!("writing `{}`: {e}", path.display())))?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_lines_split_on_unquoted_commas() {
        assert_eq!(split_csv_line("a,\"b,c\",\"d\"\"e\","), ["a", "b,c", "d\"e", ""]);
    }

    #[test]
    fn unusable_files_are_rejected_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("empty.csv", "", "is empty"),
            ("dup.csv", "a,b,a\n1,2,3\n", "`a` more than once"),
            ("header_only.csv", "a,b\n", "no rows"),
        ];
        for (name, text, expected) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let err = read_table(&path).unwrap_err();
            assert!(err.to_string().contains(expected) && err.to_string().contains(name), "{name}: {err}");
        }
        let err = read_table(&dir.path().join("missing.csv")).unwrap_err();
        assert!(err.to_string().contains("missing.csv"), "{err}");
        std::fs::write(dir.path().join("bad.parquet"), b"not parquet").unwrap();
        let err = read_table(&dir.path().join("bad.parquet")).unwrap_err();
        assert!(err.to_string().contains("Parquet"), "{err}");
    }

    #[test]
    fn parquet_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let mut df = df!("x" => [1.5, 2.5], "label" => ["a", "b"]).unwrap();
        let file = std::fs::File::create(&path).unwrap();
        ParquetWriter::new(file).finish(&mut df).unwrap();
        let back = read_table(&path).unwrap();
        assert!(df.equals(&back));
    }

    #[test]
    fn quoted_header_names_keep_their_quotes_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.csv");
        std::fs::write(&path, "\u{feff}\"a\"\"b\",\"c,d\",\"target \"\"y\"\"\"\n1,2,x\n").unwrap();
        let df = read_table(&path).unwrap();
        let names: Vec<String> = df.get_column_names().iter().map(|n| n.to_string()).collect();
        assert_eq!(names, ["a\"b", "c,d", "target \"y\""]);
        write_csv(&df, &dir.path().join("out.csv")).unwrap();
        let again = read_csv_bytes(std::fs::read(dir.path().join("out.csv")).unwrap(), "out.csv").unwrap();
        assert!(df.equals_missing(&again), "{again:?}");
    }

    #[test]
    fn csv_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(&path, "x,label\n1.5,a\n,b\n3,a\n").unwrap();
        let df = read_table(&path).unwrap();
        assert_eq!(df.shape(), (3, 2));
        write_csv(&df, &dir.path().join("out.csv")).unwrap();
        let again = read_table(&dir.path().join("out.csv")).unwrap();
        assert!(df.equals_missing(&again));
    }
}
