//! A report's rows as file bytes: CSV, Parquet or JSON lines, produced as the rows come so that a
//! file of any size passes through a bounded buffer ([`Encoder::take`] hands over what is ready).

use std::sync::Arc;

use arrow_array::builder::{
    Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use store::reports::{Cell, Column, ColumnKind, Format};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Rows per Parquet row group: each is encoded and handed over when full, so a Parquet file's
/// memory is one row group's, whatever its size.
pub const ROW_GROUP: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("Arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes rows of `columns` in one format.
pub struct Encoder {
    inner: Inner,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let format = match &self.inner {
            Inner::Csv(_) => "csv",
            Inner::Jsonl { .. } => "jsonl",
            Inner::Parquet(_) => "parquet",
        };
        f.debug_struct("Encoder")
            .field("format", &format)
            .field("pending", &self.pending())
            .finish()
    }
}

enum Inner {
    Csv(Box<csv::Writer<Vec<u8>>>),
    Jsonl {
        columns: Vec<Column>,
        buffer: Vec<u8>,
    },
    Parquet(Box<ParquetEncoder>),
}

impl Encoder {
    pub fn new(format: Format, columns: &[Column]) -> Result<Self, EncodeError> {
        let inner = match format {
            Format::Csv => {
                let mut writer = csv_writer();
                writer.write_record(columns.iter().map(|column| column.name))?;
                Inner::Csv(Box::new(writer))
            }
            Format::Jsonl => Inner::Jsonl {
                columns: columns.to_vec(),
                buffer: Vec::with_capacity(1 << 16),
            },
            Format::Parquet => Inner::Parquet(Box::new(ParquetEncoder::new(columns)?)),
        };
        Ok(Encoder { inner })
    }

    /// Adds one row, its cells in the columns' order.
    pub fn row(&mut self, cells: &[Cell]) -> Result<(), EncodeError> {
        match &mut self.inner {
            Inner::Csv(writer) => {
                for cell in cells {
                    writer.write_field(csv_text(cell).as_bytes())?;
                }
                writer.write_record(None::<&[u8]>)?;
            }
            Inner::Jsonl { columns, buffer } => {
                let mut object = serde_json::Map::with_capacity(columns.len());
                for (column, cell) in columns.iter().zip(cells) {
                    object.insert(column.name.to_owned(), json_value(cell));
                }
                serde_json::to_writer(&mut *buffer, &object)
                    .map_err(|error| EncodeError::Io(error.into()))?;
                buffer.push(b'\n');
            }
            Inner::Parquet(parquet) => parquet.row(cells)?,
        }
        Ok(())
    }

    /// The bytes ready to be stored, taken out of the encoder.
    pub fn take(&mut self) -> Result<Vec<u8>, EncodeError> {
        Ok(match &mut self.inner {
            Inner::Csv(writer) => {
                // The writer keeps no state between records: a fresh one carries on.
                let full = std::mem::replace(writer, Box::new(csv_writer()));
                full.into_inner()
                    .map_err(|error| EncodeError::Io(error.into_error()))?
            }
            Inner::Jsonl { buffer, .. } => std::mem::take(buffer),
            Inner::Parquet(parquet) => std::mem::take(parquet.writer.inner_mut()),
        })
    }

    /// How many bytes are waiting to be taken.
    pub fn pending(&self) -> usize {
        match &self.inner {
            // The CSV writer's own buffer (a few KiB) is not counted.
            Inner::Csv(writer) => writer.get_ref().len(),
            Inner::Jsonl { buffer, .. } => buffer.len(),
            Inner::Parquet(parquet) => parquet.writer.inner().len(),
        }
    }

    /// Ends the file: the last bytes.
    pub fn finish(self) -> Result<Vec<u8>, EncodeError> {
        Ok(match self.inner {
            Inner::Csv(writer) => writer
                .into_inner()
                .map_err(|error| EncodeError::Io(error.into_error()))?,
            Inner::Jsonl { buffer, .. } => buffer,
            Inner::Parquet(parquet) => parquet.finish()?,
        })
    }
}

/// RFC 4180: records end with CRLF; a field is quoted when it holds a comma, a quote or a line
/// break.
fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::with_capacity(1 << 16))
}

/// A cell as CSV text. Text that a spreadsheet would take for a formula (it starts with `=`,
/// `+`, `-`, `@`, a tab, a carriage return or a NUL) is prefixed with `'`, which spreadsheets
/// show and never evaluate (ASVS 1.2.10); numbers are written as numbers.
fn csv_text(cell: &Cell) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    match cell {
        Cell::Null => Cow::Borrowed(""),
        Cell::Text(text) => neutralised(text),
        Cell::Integer(value) => Cow::Owned(value.to_string()),
        Cell::Float(value) => Cow::Owned(value.to_string()),
        Cell::Time(at) => Cow::Owned(rfc3339(*at)),
        Cell::Json(value) => Cow::Owned(neutralised(&value.to_string()).into_owned()),
    }
}

pub fn neutralised(text: &str) -> std::borrow::Cow<'_, str> {
    match text.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r' | b'\0') => {
            std::borrow::Cow::Owned(format!("'{text}"))
        }
        _ => std::borrow::Cow::Borrowed(text),
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

fn json_value(cell: &Cell) -> serde_json::Value {
    match cell {
        Cell::Null => serde_json::Value::Null,
        Cell::Text(text) => serde_json::Value::String(text.clone()),
        Cell::Integer(value) => serde_json::Value::from(*value),
        // JSON has no not-a-number nor infinities: null, as the API writes them.
        Cell::Float(value) => serde_json::Number::from_f64(*value)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Cell::Time(at) => serde_json::Value::String(rfc3339(*at)),
        Cell::Json(value) => value.clone(),
    }
}

/// Parquet: a column builder per column, a row group per [`ROW_GROUP`] rows, written into a
/// buffer that [`Encoder::take`] empties.
struct ParquetEncoder {
    schema: Arc<Schema>,
    builders: Vec<Builder>,
    rows: usize,
    writer: ArrowWriter<Vec<u8>>,
}

enum Builder {
    Text(StringBuilder),
    Integer(Int64Builder),
    Float(Float64Builder),
    Time(TimestampMicrosecondBuilder),
}

impl ParquetEncoder {
    fn new(columns: &[Column]) -> Result<Self, EncodeError> {
        let fields: Vec<Field> = columns
            .iter()
            .map(|column| {
                let data_type = match column.kind {
                    ColumnKind::Text | ColumnKind::Json => DataType::Utf8,
                    ColumnKind::Integer => DataType::Int64,
                    ColumnKind::Float => DataType::Float64,
                    ColumnKind::Time => {
                        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
                    }
                };
                Field::new(column.name, data_type, true)
            })
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
            .set_max_row_group_row_count(Some(ROW_GROUP))
            .build();
        let writer = ArrowWriter::try_new(
            Vec::with_capacity(1 << 20),
            schema.clone(),
            Some(properties),
        )?;
        let builders = columns
            .iter()
            .map(|column| Self::builder(column.kind))
            .collect();
        Ok(ParquetEncoder {
            schema,
            builders,
            rows: 0,
            writer,
        })
    }

    fn builder(kind: ColumnKind) -> Builder {
        match kind {
            ColumnKind::Text | ColumnKind::Json => Builder::Text(StringBuilder::new()),
            ColumnKind::Integer => Builder::Integer(Int64Builder::with_capacity(ROW_GROUP)),
            ColumnKind::Float => Builder::Float(Float64Builder::with_capacity(ROW_GROUP)),
            ColumnKind::Time => Builder::Time(
                TimestampMicrosecondBuilder::with_capacity(ROW_GROUP).with_timezone("UTC"),
            ),
        }
    }

    fn row(&mut self, cells: &[Cell]) -> Result<(), EncodeError> {
        for (builder, cell) in self.builders.iter_mut().zip(cells) {
            match (builder, cell) {
                (Builder::Text(builder), Cell::Text(text)) => builder.append_value(text),
                (Builder::Text(builder), Cell::Json(value)) => {
                    builder.append_value(value.to_string())
                }
                (Builder::Integer(builder), Cell::Integer(value)) => builder.append_value(*value),
                (Builder::Float(builder), Cell::Float(value)) => builder.append_value(*value),
                (Builder::Time(builder), Cell::Time(at)) => {
                    builder.append_value((at.unix_timestamp_nanos() / 1_000) as i64)
                }
                (Builder::Text(builder), _) => builder.append_null(),
                (Builder::Integer(builder), _) => builder.append_null(),
                (Builder::Float(builder), _) => builder.append_null(),
                (Builder::Time(builder), _) => builder.append_null(),
            }
        }
        self.rows += 1;
        if self.rows == ROW_GROUP {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the rows built so far as a row group.
    fn flush(&mut self) -> Result<(), EncodeError> {
        if self.rows == 0 {
            return Ok(());
        }
        let arrays: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(|builder| -> ArrayRef {
                match builder {
                    Builder::Text(builder) => Arc::new(builder.finish()),
                    Builder::Integer(builder) => Arc::new(builder.finish()),
                    Builder::Float(builder) => Arc::new(builder.finish()),
                    Builder::Time(builder) => Arc::new(builder.finish()),
                }
            })
            .collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)?;
        self.writer.write(&batch)?;
        self.writer.flush()?;
        self.rows = 0;
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<u8>, EncodeError> {
        self.flush()?;
        Ok(self.writer.into_inner()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralised_and_numbers_are_not() {
        for dangerous in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "\0x"] {
            assert_eq!(neutralised(dangerous), format!("'{dangerous}"));
        }
        assert_eq!(neutralised("plain"), "plain");
        assert_eq!(csv_text(&Cell::Float(-1.5)), "-1.5");
        assert_eq!(csv_text(&Cell::Integer(-2)), "-2");
        assert_eq!(csv_text(&Cell::Text("-2".into())), "'-2");
    }
}
