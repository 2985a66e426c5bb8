//! How an outbox row stores its event document. Most of a document is the same from one
//! event to the next (field names, currency, tenant, timestamps' shape), so rows store it
//! compressed with zstd against a fixed dictionary of typical documents: a 950-byte
//! `TransferPosted` document takes about 120 bytes. The outbox was over half of everything
//! the ledger wrote per transfer; see `docs/performance.md`.
//!
//! A payload column holds either TEXT, the document itself (rows written before this format,
//! and still readable), or a BLOB whose first byte names its format. Format 1 is a zstd frame
//! (level 1, content size in the header) made with `outbox_dictionary_v1.txt` as a raw-content
//! dictionary. That file is part of the format: changing it would garble every stored row, so
//! a new dictionary needs a new format byte.
//!
//! Format 2, written since issue 20, is the event itself in the record encoding
//! (`kopek_store::record::encode_event`, the subject inline): about as small as format 1, and
//! it costs the one writer no JSON and no compression. A reader gets the event back
//! (`EventBody::Record`), and the events side renders its document. The record encoding is
//! then part of this format too, as it already is of the journal's frames.
//!
//! Format 3 is format 2 for an event about a transfer that its `transfers` row holds as the
//! event saw it, which is so for every transfer no longer pending (a pending hold's row
//! changes when it is captured, voided or expired; nothing else changes a row). The subject
//! is then a reference to that row (record 0) instead of the transfer written out again: a
//! posted transfer's event was 320 bytes, the transfer itself most of them. The reader
//! supplies the row, found by the event's subject id.

use kopek_core::{Event, Subject, Transfer, TransferStatus};
use kopek_store::EventBody;
use rusqlite::types::ValueRef;
use std::cell::RefCell;
use std::sync::LazyLock;
use zstd::dict::DecoderDictionary;

/// The first byte of a format-1 payload.
const FORMAT_ZSTD_V1: u8 = 1;
/// The first byte of a format-2 payload.
const FORMAT_EVENT_V2: u8 = 2;
/// The first byte of a format-3 payload.
const FORMAT_EVENT_ROW_V3: u8 = 3;
#[cfg(test)]
const LEVEL: i32 = 1;
/// A document larger than this is refused on read as corrupt rather than allocated.
const DOCUMENT_BYTES_MAX: u64 = 64 * 1024 * 1024;

static DICTIONARY_V1: &[u8] = include_bytes!("outbox_dictionary_v1.txt");
#[cfg(test)]
static ENCODER_V1: LazyLock<zstd::dict::EncoderDictionary<'static>> =
    LazyLock::new(|| zstd::dict::EncoderDictionary::copy(DICTIONARY_V1, LEVEL));
static DECODER_V1: LazyLock<DecoderDictionary<'static>> =
    LazyLock::new(|| DecoderDictionary::copy(DICTIONARY_V1));

thread_local! {
    #[cfg(test)]
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// The stored form of an event: format 3 when `row` is the transfers row of its subject as
/// the event saw it and no longer pending, else format 2.
pub fn encode_event(event: &Event, row: Option<&Transfer>) -> Vec<u8> {
    let row = row.filter(|row| {
        row.status != TransferStatus::Pending
            && matches!(&event.subject, Subject::Transfer(subject) if subject == *row)
    });
    let mut stored = Vec::with_capacity(if row.is_some() { 64 } else { 256 });
    stored.push(if row.is_some() { FORMAT_EVENT_ROW_V3 } else { FORMAT_EVENT_V2 });
    kopek_store::record::encode_event(event, row, &mut stored);
    stored
}

/// Whether a stored payload refers to its subject's transfers row (format 3).
pub fn refers_to_row(column: ValueRef<'_>) -> bool {
    matches!(column, ValueRef::Blob([FORMAT_EVENT_ROW_V3, ..]))
}

/// The stored form of an event document (format 1, which rows written before format 2 hold).
#[cfg(test)]
pub fn encode(document: &str) -> Result<Vec<u8>, String> {
    COMPRESSOR.with_borrow_mut(|slot| {
        let compressor = match slot {
            Some(compressor) => compressor,
            None => slot.insert(
                zstd::bulk::Compressor::with_prepared_dictionary(&ENCODER_V1)
                    .map_err(|error| format!("zstd compressor: {error}"))?,
            ),
        };
        let frame = compressor
            .compress(document.as_bytes())
            .map_err(|error| format!("compress an event document: {error}"))?;
        let mut stored = Vec::with_capacity(frame.len() + 1);
        stored.push(FORMAT_ZSTD_V1);
        stored.extend_from_slice(&frame);
        Ok(stored)
    })
}

/// What a payload column holds: the event (formats 2 and 3), or the document an earlier
/// version stored (text, format 1). `row` is its subject's transfers row, which a format-3
/// payload refers to (`refers_to_row`).
pub fn decode(column: ValueRef<'_>, row: Option<Transfer>) -> Result<EventBody, String> {
    let record = |event: Event| EventBody::Record(Box::new(event));
    match column {
        ValueRef::Text(text) => String::from_utf8(text.to_vec())
            .map(EventBody::Document)
            .map_err(|_| "event payload is not UTF-8 text".to_owned()),
        ValueRef::Blob([FORMAT_ZSTD_V1, frame @ ..]) => decompress(frame).map(EventBody::Document),
        ValueRef::Blob([FORMAT_EVENT_V2, bytes @ ..]) => {
            kopek_store::record::decode_event(bytes, None).map(record)
        }
        ValueRef::Blob([FORMAT_EVENT_ROW_V3, bytes @ ..]) => {
            let Some(row) = row else {
                return Err("event payload refers to its transfer's row, which is missing".into());
            };
            kopek_store::record::decode_event(bytes, Some(row)).map(record)
        }
        ValueRef::Blob([format, ..]) => Err(format!("event payload has unknown format {format}")),
        _ => Err("event payload is neither text nor a known blob".to_owned()),
    }
}

fn decompress(frame: &[u8]) -> Result<String, String> {
    let size = match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(size)) if size <= DOCUMENT_BYTES_MAX => size,
        _ => return Err("event payload is not a complete zstd frame".to_owned()),
    };
    let capacity = usize::try_from(size).map_err(|_| "event payload too large".to_owned())?;
    let bytes = DECOMPRESSOR.with_borrow_mut(|slot| {
        let decompressor = match slot {
            Some(decompressor) => decompressor,
            None => slot.insert(
                zstd::bulk::Decompressor::with_prepared_dictionary(&DECODER_V1)
                    .map_err(|error| format!("zstd decompressor: {error}"))?,
            ),
        };
        decompressor
            .decompress(frame, capacity)
            .map_err(|error| format!("event payload does not decompress: {error}"))
    })?;
    String::from_utf8(bytes).map_err(|_| "event payload is not UTF-8 text".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCUMENT: &str = r#"{"at":"2026-11-21T19:30:42.061192Z","balances":[{"account_id":"bbd37e3cf-0009466","available_minor":999999999582,"currency":"USD","pending_in_minor":0,"pending_out_minor":0,"posted_minor":-418}],"id":"01M7ZSDSRD9ZZ8FJXH6REYFMR0","subject":{"action":"post","amount":"0.56","amount_minor":56,"category":"","currency":"USD","description":"","id":"01M7ZSDSRD9ZZ8FJXH6REYFMQZ","metadata":{"note":"ünïcode"},"status":"posted"},"subject_type":"transfer","tenant":"default","type":"TransferPosted"}"#;

    #[test]
    fn a_document_round_trips_and_shrinks() {
        let stored = encode(DOCUMENT).expect("encode");
        assert_eq!(stored[0], FORMAT_ZSTD_V1);
        assert!(stored.len() * 2 < DOCUMENT.len(), "{} bytes stored", stored.len());
        assert_eq!(decode(ValueRef::Blob(&stored), None).expect("decode"), document(DOCUMENT));
        let text = decode(ValueRef::Text(DOCUMENT.as_bytes()), None).expect("text");
        assert_eq!(text, document(DOCUMENT));
        let big = format!("{{\"memo\":\"{}\"}}", "x".repeat(200_000));
        let read = decode(ValueRef::Blob(&encode(&big).expect("big")), None).expect("big");
        assert_eq!(read, document(&big));
    }

    /// Stored rows must stay readable: this payload was written by format 1, and decoding it
    /// fails if the dictionary or the format changes.
    #[test]
    fn a_stored_format_1_payload_still_decodes() {
        let stored = hex(GOLDEN_V1);
        assert_eq!(decode(ValueRef::Blob(&stored), None).expect("decode"), document(DOCUMENT));
    }

    #[test]
    fn damaged_payloads_are_errors_not_panics() {
        let stored = encode(DOCUMENT).expect("encode");
        for damaged in [
            &stored[..stored.len() / 2],
            &stored[..1],
            &[7, 1, 2, 3][..],
            &[][..],
            &[FORMAT_ZSTD_V1, 0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0][..],
        ] {
            assert!(decode(ValueRef::Blob(damaged), None).is_err(), "{damaged:?}");
        }
        assert!(decode(ValueRef::Integer(5), None).is_err());
        assert!(decode(ValueRef::Text(&[0xff, 0xfe]), None).is_err());
    }

    fn document(text: &str) -> EventBody {
        EventBody::Document(text.to_owned())
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|index| u8::from_str_radix(&text[index..index + 2], 16).expect("hex"))
            .collect()
    }

    const GOLDEN_V1: &str = "0128b52ffd60ec001d0500d40531312d32315431393a33303a34322e3036313139326262643337653363662d30303039343636393538322d3431384d375a5344535244395a5a38464a584836524559464d52302e353536515a226e6f7465223a22c3bc6ec3af636f6465170000bf10d81400215f00053296af055aca28792a4e880cbecc1df4121ec836cfd8522e04cd352e05027b730182de18030d7262e004fe340d8eb8fd02e915886c9b1340";
}
