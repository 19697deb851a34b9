//! A decoder for PostgreSQL's `pgoutput` logical decoding messages, protocol version 1, as they
//! arrive in the payload of the replication stream's `XLogData` frames (Begin, Commit and
//! Message are parsed by the transport already).
//!
//! Written here rather than taken from a crate: the format is small and documented
//! (<https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>), and the
//! one maintained decoder's high-level events drop unchanged out-of-line values, which this
//! agent must never do. The decoder keeps the unchanged-TOAST marker and fails loudly on
//! anything it does not understand instead of skipping it.

use std::fmt;

/// One decoded message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Relation(Relation),
    Type {
        oid: u32,
        namespace: String,
        name: String,
    },
    Origin {
        name: String,
    },
    Insert {
        relation: u32,
        new: Tuple,
    },
    Update {
        relation: u32,
        /// The old key ('K') or the whole old row ('O', with `REPLICA IDENTITY FULL`), when
        /// the server logged one.
        old: Option<(OldKind, Tuple)>,
        new: Tuple,
    },
    Delete {
        relation: u32,
        old: (OldKind, Tuple),
    },
    Truncate {
        relations: Vec<u32>,
        cascade: bool,
        restart_identity: bool,
    },
}

/// A table's shape as of this point of the log. The server sends one before the first change
/// to a table in a session and again after its definition changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    pub id: u32,
    pub namespace: String,
    pub name: String,
    /// `d` default (primary key), `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<Column>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
    /// Part of the replica identity (every column, with `REPLICA IDENTITY FULL`).
    pub key: bool,
}

/// Which old image an update or delete carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldKind {
    /// The replica identity's columns only; the others are null.
    Key,
    /// The whole old row.
    Full,
}

pub type Tuple = Vec<Datum>;

/// One column's value in a tuple.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    Null,
    /// An out-of-line value the change did not touch, which the server did not send again.
    Unchanged,
    /// The type's text output.
    Text(String),
    /// The type's binary send format (only with the `binary` option, which this agent does not
    /// request).
    Binary(Vec<u8>),
}

/// What made a message undecodable: always a protocol violation or a bug, never skippable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(String);

impl fmt::Display for DecodeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "undecodable pgoutput message: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

fn error(message: impl Into<String>) -> DecodeError {
    DecodeError(message.into())
}

/// Decodes one message.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let mut reader = Reader { bytes, at: 0 };
    let tag = reader.u8()?;
    let message = match tag {
        b'R' => {
            let id = reader.u32()?;
            let namespace = reader.string()?;
            let name = reader.string()?;
            let replica_identity = reader.u8()?;
            let count = reader.u16()?;
            let mut columns = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                let flags = reader.u8()?;
                let name = reader.string()?;
                let type_oid = reader.u32()?;
                let type_modifier = reader.i32()?;
                columns.push(Column {
                    name,
                    type_oid,
                    type_modifier,
                    key: flags & 1 == 1,
                });
            }
            Message::Relation(Relation {
                id,
                // An empty namespace means pg_catalog.
                namespace: if namespace.is_empty() {
                    "pg_catalog".into()
                } else {
                    namespace
                },
                name,
                replica_identity,
                columns,
            })
        }
        b'Y' => Message::Type {
            oid: reader.u32()?,
            namespace: reader.string()?,
            name: reader.string()?,
        },
        b'O' => {
            let _commit_lsn = reader.u64()?;
            Message::Origin {
                name: reader.string()?,
            }
        }
        b'I' => {
            let relation = reader.u32()?;
            reader.expect(b'N')?;
            Message::Insert {
                relation,
                new: reader.tuple()?,
            }
        }
        b'U' => {
            let relation = reader.u32()?;
            let old = match reader.u8()? {
                b'K' => {
                    let old = Some((OldKind::Key, reader.tuple()?));
                    reader.expect(b'N')?;
                    old
                }
                b'O' => {
                    let old = Some((OldKind::Full, reader.tuple()?));
                    reader.expect(b'N')?;
                    old
                }
                b'N' => None,
                other => return Err(error(format!("update with tuple tag {other:#04x}"))),
            };
            Message::Update {
                relation,
                old,
                new: reader.tuple()?,
            }
        }
        b'D' => {
            let relation = reader.u32()?;
            let kind = match reader.u8()? {
                b'K' => OldKind::Key,
                b'O' => OldKind::Full,
                other => return Err(error(format!("delete with tuple tag {other:#04x}"))),
            };
            Message::Delete {
                relation,
                old: (kind, reader.tuple()?),
            }
        }
        b'T' => {
            let count = reader.u32()?;
            let options = reader.u8()?;
            let relations = (0..count)
                .map(|_| reader.u32())
                .collect::<Result<Vec<_>, _>>()?;
            Message::Truncate {
                relations,
                cascade: options & 1 == 1,
                restart_identity: options & 2 == 2,
            }
        }
        other => {
            return Err(error(format!(
                "unknown message tag {other:#04x} (streamed or two-phase messages need a newer protocol version than this agent requests)"
            )));
        }
    };
    if reader.at != bytes.len() {
        return Err(error(format!(
            "{} trailing byte(s) after a {:?} message",
            bytes.len() - reader.at,
            char::from(tag)
        )));
    }
    Ok(message)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(count)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| error("message ends early"))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn expect(&mut self, tag: u8) -> Result<(), DecodeError> {
        let found = self.u8()?;
        if found == tag {
            Ok(())
        } else {
            Err(error(format!(
                "expected {:?}, found {found:#04x}",
                char::from(tag)
            )))
        }
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        let bytes = self.take(2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(self.u32()? as i32)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from(self.u32()?) << 32 | u64::from(self.u32()?))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let rest = &self.bytes[self.at..];
        let end = rest
            .iter()
            .position(|byte| *byte == 0)
            .ok_or_else(|| error("unterminated string"))?;
        let text = std::str::from_utf8(&rest[..end])
            .map_err(|_| error("a name is not valid UTF-8"))?
            .to_owned();
        self.at += end + 1;
        Ok(text)
    }

    fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let count = self.u16()?;
        let mut datums = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            datums.push(match self.u8()? {
                b'n' => Datum::Null,
                b'u' => Datum::Unchanged,
                b't' => {
                    let length = self.u32()? as usize;
                    let bytes = self.take(length)?;
                    Datum::Text(
                        String::from_utf8(bytes.to_vec())
                            .map_err(|_| error("a text value is not valid UTF-8"))?,
                    )
                }
                b'b' => {
                    let length = self.u32()? as usize;
                    Datum::Binary(self.take(length)?.to_vec())
                }
                other => return Err(error(format!("unknown column kind {other:#04x}"))),
            });
        }
        Ok(datums)
    }
}

/// The encoder the tests build messages with (the server's side of the format).
#[cfg(test)]
pub(crate) mod encode {
    use super::*;

    fn string(out: &mut Vec<u8>, text: &str) {
        out.extend_from_slice(text.as_bytes());
        out.push(0);
    }

    pub fn tuple(out: &mut Vec<u8>, tuple: &Tuple) {
        out.extend_from_slice(&(tuple.len() as u16).to_be_bytes());
        for datum in tuple {
            match datum {
                Datum::Null => out.push(b'n'),
                Datum::Unchanged => out.push(b'u'),
                Datum::Text(text) => {
                    out.push(b't');
                    out.extend_from_slice(&(text.len() as u32).to_be_bytes());
                    out.extend_from_slice(text.as_bytes());
                }
                Datum::Binary(bytes) => {
                    out.push(b'b');
                    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                    out.extend_from_slice(bytes);
                }
            }
        }
    }

    fn old(out: &mut Vec<u8>, kind: OldKind, old: &Tuple) {
        out.push(match kind {
            OldKind::Key => b'K',
            OldKind::Full => b'O',
        });
        tuple(out, old);
    }

    pub fn message(message: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        match message {
            Message::Relation(relation) => {
                out.push(b'R');
                out.extend_from_slice(&relation.id.to_be_bytes());
                string(&mut out, &relation.namespace);
                string(&mut out, &relation.name);
                out.push(relation.replica_identity);
                out.extend_from_slice(&(relation.columns.len() as u16).to_be_bytes());
                for column in &relation.columns {
                    out.push(u8::from(column.key));
                    string(&mut out, &column.name);
                    out.extend_from_slice(&column.type_oid.to_be_bytes());
                    out.extend_from_slice(&column.type_modifier.to_be_bytes());
                }
            }
            Message::Type {
                oid,
                namespace,
                name,
            } => {
                out.push(b'Y');
                out.extend_from_slice(&oid.to_be_bytes());
                string(&mut out, namespace);
                string(&mut out, name);
            }
            Message::Origin { name } => {
                out.push(b'O');
                out.extend_from_slice(&0u64.to_be_bytes());
                string(&mut out, name);
            }
            Message::Insert { relation, new } => {
                out.push(b'I');
                out.extend_from_slice(&relation.to_be_bytes());
                out.push(b'N');
                tuple(&mut out, new);
            }
            Message::Update {
                relation,
                old: before,
                new,
            } => {
                out.push(b'U');
                out.extend_from_slice(&relation.to_be_bytes());
                if let Some((kind, before)) = before {
                    old(&mut out, *kind, before);
                }
                out.push(b'N');
                tuple(&mut out, new);
            }
            Message::Delete {
                relation,
                old: (kind, before),
            } => {
                out.push(b'D');
                out.extend_from_slice(&relation.to_be_bytes());
                old(&mut out, *kind, before);
            }
            Message::Truncate {
                relations,
                cascade,
                restart_identity,
            } => {
                out.push(b'T');
                out.extend_from_slice(&(relations.len() as u32).to_be_bytes());
                out.push(u8::from(*cascade) | u8::from(*restart_identity) << 1);
                for relation in relations {
                    out.extend_from_slice(&relation.to_be_bytes());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn datum() -> impl Strategy<Value = Datum> {
        prop_oneof![
            Just(Datum::Null),
            Just(Datum::Unchanged),
            ".{0,40}".prop_map(Datum::Text),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(Datum::Binary),
        ]
    }

    fn tuple() -> impl Strategy<Value = Tuple> {
        proptest::collection::vec(datum(), 0..8)
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-zA-Z_ \"';-]{1,20}"
    }

    fn message() -> impl Strategy<Value = Message> {
        let old = prop_oneof![Just(OldKind::Key), Just(OldKind::Full)];
        prop_oneof![
            (
                any::<u32>(),
                name(),
                name(),
                prop_oneof![Just(b'd'), Just(b'n'), Just(b'f'), Just(b'i')],
                proptest::collection::vec(
                    (name(), any::<u32>(), any::<i32>(), any::<bool>()),
                    0..6
                )
            )
                .prop_map(|(id, namespace, name, replica_identity, columns)| {
                    Message::Relation(Relation {
                        id,
                        namespace,
                        name,
                        replica_identity,
                        columns: columns
                            .into_iter()
                            .map(|(name, type_oid, type_modifier, key)| Column {
                                name,
                                type_oid,
                                type_modifier,
                                key,
                            })
                            .collect(),
                    })
                }),
            (any::<u32>(), name(), name()).prop_map(|(oid, namespace, name)| Message::Type {
                oid,
                namespace,
                name
            }),
            (any::<u32>(), tuple()).prop_map(|(relation, new)| Message::Insert { relation, new }),
            (
                any::<u32>(),
                proptest::option::of((old.clone(), tuple())),
                tuple()
            )
                .prop_map(|(relation, old, new)| Message::Update {
                    relation,
                    old,
                    new
                }),
            (any::<u32>(), old, tuple()).prop_map(|(relation, kind, tuple)| Message::Delete {
                relation,
                old: (kind, tuple)
            }),
            (
                proptest::collection::vec(any::<u32>(), 0..5),
                any::<bool>(),
                any::<bool>()
            )
                .prop_map(|(relations, cascade, restart_identity)| Message::Truncate {
                    relations,
                    cascade,
                    restart_identity,
                }),
        ]
    }

    proptest! {
        #[test]
        fn every_message_decodes_to_what_was_encoded(message in message()) {
            prop_assert_eq!(decode(&encode::message(&message)), Ok(message));
        }

        #[test]
        fn a_cut_or_padded_message_is_refused_not_misread(message in message(), cut in 1usize..8) {
            let bytes = encode::message(&message);
            let cut = cut.min(bytes.len());
            prop_assert!(decode(&bytes[..bytes.len() - cut]).is_err());
            let mut padded = bytes.clone();
            padded.push(0);
            prop_assert!(decode(&padded).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn an_empty_namespace_is_pg_catalog_and_unknown_tags_are_errors() {
        let relation = Message::Relation(Relation {
            id: 1,
            namespace: String::new(),
            name: "t".into(),
            replica_identity: b'd',
            columns: Vec::new(),
        });
        let Ok(Message::Relation(decoded)) = decode(&encode::message(&relation)) else {
            panic!("a relation decodes");
        };
        assert_eq!(decoded.namespace, "pg_catalog");
        assert!(
            decode(b"S\0\0\0\x01")
                .unwrap_err()
                .to_string()
                .contains("unknown message tag")
        );
        assert!(decode(b"").is_err());
    }
}
