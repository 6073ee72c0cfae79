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
        let df = ParquetReader::new(file.into_parts().0)
            .finish()
            .map_err(|e| UserError::setup(format!("data file `{shown}` is not readable as Parquet: {e}")))?;
        csv_ready(df, path)?
    } else {
        let (header, separator) = check_csv_header(path)?;
        let df = CsvReadOptions::default()
            .with_has_header(true)
            .with_infer_schema_length(Some(10_000))
            .with_parse_options(CsvParseOptions::default().with_separator(separator))
            .try_into_reader_with_file_path(Some(path.to_path_buf()))
            .and_then(|reader| reader.finish())
            .and_then(|df| unescaped(df, &header))
            .map_err(|e| not_readable(path, e))?;
        without_unnamed_empty_columns(df, &header, path)?
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
    let first = header_record(&bytes[..]).map_err(|e| format!("{name}: {e}"))?;
    let header = header_names(&String::from_utf8_lossy(&first), b',');
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

/// `df` with only what scripts' CSV files can hold: dates and times become ISO 8601 text (UTC),
/// as a CSV file would spell them; columns of other types (durations, lists, bytes) are refused.
fn csv_ready(mut df: DataFrame, path: &Path) -> Result<DataFrame, UserError> {
    let failed = |e: PolarsError| UserError::setup(format!("data file `{}`: {e}", path.display()));
    for column in df.columns().to_vec() {
        let series = column.as_materialized_series();
        let text: Vec<Option<String>> = match series.dtype() {
            DataType::Date => {
                let days = series.to_physical_repr().into_owned();
                let days = days.i32().map_err(failed)?;
                days.iter().map(|d| d.and_then(|d| iso_date_time(i64::from(d) * 86_400, 0, true))).collect()
            }
            DataType::Datetime(unit, _) => {
                let per_second: i64 = match unit {
                    TimeUnit::Nanoseconds => 1_000_000_000,
                    TimeUnit::Microseconds => 1_000_000,
                    TimeUnit::Milliseconds => 1_000,
                };
                let stamps = series.to_physical_repr().into_owned();
                let stamps = stamps.i64().map_err(failed)?;
                stamps
                    .iter()
                    .map(|t| {
                        let t = t?;
                        let nanos = t.rem_euclid(per_second) * (1_000_000_000 / per_second);
                        iso_date_time(t.div_euclid(per_second), nanos as u32, false)
                    })
                    .collect()
            }
            dtype
                if dtype.is_primitive_numeric()
                    || matches!(dtype, DataType::Boolean | DataType::String | DataType::Null)
                    || dtype.is_categorical()
                    || dtype.is_enum() =>
            {
                continue;
            }
            other => {
                return Err(UserError::setup(format!(
                    "data file `{}`: column `{}` holds {other}, which scripts cannot be given as CSV",
                    path.display(),
                    series.name()
                ))
                .with_hint("convert it to numbers or text, or leave it out of the file"));
            }
        };
        df.with_column(Column::new(series.name().clone(), text)).map_err(failed)?;
    }
    Ok(df)
}

/// `seconds` after 1970-01-01 UTC (and `nanos`) as `2024-03-01` (`date_only`) or
/// `2024-03-01T12:30:00Z`; `None` outside the years chrono represents.
fn iso_date_time(seconds: i64, nanos: u32, date_only: bool) -> Option<String> {
    let t = chrono::DateTime::from_timestamp(seconds, nanos)?;
    Some(if date_only {
        t.format("%Y-%m-%d").to_string()
    } else if nanos == 0 {
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.fZ").to_string()
    })
}

/// Why polars could not read a CSV file, with what to do. Text that is not UTF-8 is located:
/// the line and the bytes.
fn not_readable(path: &Path, e: PolarsError) -> UserError {
    let shown = path.display();
    let bytes = fs_err::read(path).unwrap_or_default();
    if let Err(bad) = std::str::from_utf8(&bytes) {
        let at = bad.valid_up_to();
        let line = 1 + bytes[..at].iter().filter(|b| **b == b'\n').count();
        let sample: String = bytes[at..].iter().take(4).map(|b| format!("\\x{b:02x}")).collect();
        return UserError::setup(format!(
            "data file `{shown}` is not UTF-8 text: line {line} has the bytes {sample} (byte {at})"
        ))
        .with_hint(format!(
            "save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 {shown} > utf8.csv` for a Latin-1 file"
        ));
    }
    UserError::setup(format!("data file `{shown}` is not readable as CSV: {e}"))
        .with_hint("loop-runner reads comma- or tab-separated files with a header row, or .parquet files")
}

/// `df` without the columns that have no name in the header and no value in any row (a comma
/// at the end of every line). A column without a name that holds values is refused: scripts
/// could not name it.
fn without_unnamed_empty_columns(
    df: DataFrame,
    header: &[String],
    path: &Path,
) -> Result<DataFrame, UserError> {
    let mut keep = Vec::new();
    for (i, column) in df.columns().iter().enumerate() {
        let unnamed = header.get(i).is_some_and(|n| n.trim().is_empty());
        if !unnamed {
            keep.push(column.clone());
        } else if column.null_count() < column.len() {
            return Err(UserError::setup(format!(
                "data file `{}`: column {} has no name in the header row but holds values",
                path.display(),
                i + 1
            ))
            .with_hint("name every column in the header row"));
        } else {
            tracing::warn!(file = %path.display(), column = i + 1, "dropping a column with no name and no values");
        }
    }
    DataFrame::new(df.height(), keep)
        .map_err(|e| UserError::setup(format!("data file `{}`: {e}", path.display())))
}

/// The header's names and the separator (a comma, or a tab when the header has more fields
/// between tabs than between commas). Duplicates are refused: polars would rename them silently, and scripts would then
/// read a different table than the user wrote.
fn check_csv_header(path: &Path) -> Result<(Vec<String>, u8), UserError> {
    let file =
        fs_err::File::open(path).map_err(|e| UserError::setup(format!("cannot read data file: {e}")))?;
    let first = header_record(std::io::BufReader::new(file))
        .map_err(|e| UserError::setup(format!("cannot read data file `{}`: {e}", path.display())))?;
    let first = String::from_utf8_lossy(&first);
    let separator =
        if header_names(&first, b'\t').len() > header_names(&first, b',').len() { b'\t' } else { b',' };
    let names = header_names(&first, separator);
    if names.len() == 1 && names[0].contains(';') {
        return Err(UserError::setup(format!(
            "data file `{}` has one column `{}`: its fields look separated by `;`",
            path.display(),
            names[0]
        ))
        .with_hint("loop-runner reads comma- or tab-separated files: save it with commas (decimal points, not commas)"));
    }
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
    Ok((names, separator))
}

/// A CSV file's header record: its first line, and the lines after it while a quoted name is
/// open (a name may hold a line break), up to 1 MiB (a quote never closed must not read a
/// whole file into memory; polars then says what is wrong with it).
fn header_record(mut read: impl std::io::BufRead) -> std::io::Result<Vec<u8>> {
    let mut record = Vec::new();
    let mut quotes = 0;
    loop {
        let start = record.len();
        if read.read_until(b'\n', &mut record)? == 0 {
            break;
        }
        // Quotes inside a quoted name are doubled: an odd count means one is still open.
        quotes += record[start..].iter().filter(|b| **b == b'"').count();
        if quotes % 2 == 0 || record.len() >= 1 << 20 {
            break;
        }
    }
    Ok(record)
}

/// The names in a CSV file's header record (without a byte-order mark or the line end).
fn header_names(line: &str, separator: u8) -> Vec<String> {
    split_csv_line(line.trim_start_matches('\u{feff}').trim_end_matches(['\r', '\n']), separator as char)
}

/// Splits one CSV line on `separator`, honouring double quotes.
fn split_csv_line(line: &str, separator: char) -> Vec<String> {
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
            c if c == separator && !quoted => fields.push(std::mem::take(&mut field)),
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
        assert_eq!(split_csv_line("a,\"b,c\",\"d\"\"e\",", ','), ["a", "b,c", "d\"e", ""]);
        assert_eq!(split_csv_line("a\t\"b\tc\"", '\t'), ["a", "b\tc"]);
    }

    #[test]
    fn unusable_files_are_rejected_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("empty.csv", "", "is empty"),
            ("dup.csv", "a,b,a\n1,2,3\n", "`a` more than once"),
            ("header_only.csv", "a,b\n", "no rows"),
            ("semicolons.csv", "a;b;y\n1,5;2;0\n", "separated by `;`"),
            ("unnamed.csv", "a,,y\n1,2,0\n3,4,1\n", "column 2 has no name"),
        ];
        for (name, text, expected) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let err = read_table(&path).unwrap_err();
            assert!(err.to_string().contains(expected) && err.to_string().contains(name), "{name}: {err}");
        }
        std::fs::write(dir.path().join("latin1.csv"), b"a,city\n1,K\xf6ln\n").unwrap();
        let err = read_table(&dir.path().join("latin1.csv")).unwrap_err();
        assert!(err.to_string().contains("line 2 has the bytes \\xf6\\x6c\\x6e\\x0a"), "{err}");
        let err = read_table(&dir.path().join("missing.csv")).unwrap_err();
        assert!(err.to_string().contains("missing.csv"), "{err}");
        std::fs::write(dir.path().join("bad.parquet"), b"not parquet").unwrap();
        let err = read_table(&dir.path().join("bad.parquet")).unwrap_err();
        assert!(err.to_string().contains("Parquet"), "{err}");
    }

    #[test]
    fn tabs_and_trailing_commas_read_as_the_table_written() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("tabs.tsv", "a\t\"b,c\"\ty\n1\t2\t0\n3\t4\t1\n"),
            ("trailing.csv", "a,b,c,y,\n1,2,x,0,\n3,4,z,1,\n"),
        ];
        for (name, text) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let df = read_table(&path).unwrap();
            assert_eq!(df.shape(), (2, if name == "tabs.tsv" { 3 } else { 4 }), "{name}: {df}");
            assert_eq!(df.get_column_names().last().unwrap().as_str(), "y", "{name}");
        }
    }

    #[test]
    fn parquet_dates_and_times_become_iso_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let days = Column::new("day".into(), [Some(0i32), Some(-1), None]).cast(&DataType::Date).unwrap();
        let stamps = Column::new("at".into(), [1_700_000_000_123_000i64, 0, -1])
            .cast(&DataType::Datetime(TimeUnit::Microseconds, None))
            .unwrap();
        let y = Column::new("y".into(), [1i64, 0, 1]);
        let mut df = DataFrame::new(3, vec![days, stamps, y]).unwrap();
        ParquetWriter::new(std::fs::File::create(&path).unwrap()).finish(&mut df).unwrap();
        let read = read_table(&path).unwrap();
        let text = |name: &str| -> Vec<Option<String>> {
            read.column(name).unwrap().str().unwrap().iter().map(|v| v.map(str::to_string)).collect()
        };
        assert_eq!(text("day"), [Some("1970-01-01".into()), Some("1969-12-31".into()), None]);
        assert_eq!(
            text("at"),
            [
                Some("2023-11-14T22:13:20.123Z".into()),
                Some("1970-01-01T00:00:00Z".into()),
                Some("1969-12-31T23:59:59.999999Z".into())
            ]
        );
        write_csv(&read, &dir.path().join("t.csv")).unwrap();
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
    fn a_header_name_may_hold_a_line_break() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.csv");
        std::fs::write(&path, "a,\"new\nline\",\"y \"\"t\"\"\"\n1,2,x\n3,4,z\n").unwrap();
        let df = read_table(&path).unwrap();
        let names: Vec<String> = df.get_column_names().iter().map(|n| n.to_string()).collect();
        assert_eq!(names, ["a", "new\nline", "y \"t\""]);
        assert_eq!(df.height(), 2);
        let bytes = std::fs::read(&path).unwrap();
        let again = read_csv_bytes(bytes, "n.csv").unwrap();
        assert!(df.equals_missing(&again), "{again:?}");
        // A quote never closed reads no further than 1 MiB.
        let open = format!("a,\"b\n{}", "1,2\n".repeat(600_000));
        let record = header_record(open.as_bytes()).unwrap();
        assert!((1 << 20..(1 << 20) + 8).contains(&record.len()), "{}", record.len());
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
