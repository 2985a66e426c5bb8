//! The document a broker message carries: the stored event, flattened, with its outbox
//! sequence and the schema version. `docs/events.md` describes every field; a change that
//! removes or retypes a field bumps `SCHEMA_VERSION`, adding a field does not.

use crate::EventDocument;
use kopek_store::StoredEvent;
use serde_json::{Map, Value};

/// The version of the event document. Consumers should ignore fields they do not know.
pub const SCHEMA_VERSION: u64 = 1;

/// The JSON bytes published for `event`.
pub fn document(event: &StoredEvent) -> Vec<u8> {
    document_value(event).to_string().into_bytes()
}

/// The document of `event` as a JSON value, for code that reads it rather than sends it.
pub fn document_value(event: &StoredEvent) -> Value {
    enveloped(event, &EventDocument::of_stored(event))
}

/// `document`, the document of `event` already made, with the envelope's fields added.
pub fn enveloped(event: &StoredEvent, document: &EventDocument) -> Value {
    let mut fields = match serde_json::to_value(document) {
        Ok(Value::Object(fields)) => fields,
        _ => Map::new(),
    };
    fields.insert("schema_version".to_owned(), Value::from(SCHEMA_VERSION));
    fields.insert("sequence".to_owned(), Value::from(event.sequence));
    fields.insert("subject_id".to_owned(), Value::from(event.subject_id.as_str()));
    if let Some(traceparent) = &event.traceparent {
        fields.insert("traceparent".to_owned(), Value::from(traceparent.as_str()));
    }
    Value::Object(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kopek_core::Timestamp;
    use kopek_store::EventBody;

    #[test]
    fn the_document_adds_sequence_and_version_to_the_payload() {
        let event = StoredEvent {
            sequence: 42,
            id: "01J0000000000000000000000E".to_owned(),
            tenant: "default".to_owned(),
            kind: "TransferPosted".to_owned(),
            subject_id: "01J0000000000000000000000T".to_owned(),
            at: Timestamp::from_unix_micros(1_700_000_000_000_000),
            body: EventBody::Document(
                r#"{"at":"2023-11-14T22:13:20Z","balances":[],"id":"01J0000000000000000000000E","subject":{},"subject_type":"transfer","tenant":"default","type":"TransferPosted"}"#
                    .to_owned(),
            ),
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
        };
        let document: Value = serde_json::from_slice(&document(&event)).expect("json");
        assert_eq!(
            document["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(document["sequence"], 42);
        assert_eq!(document["schema_version"], 1);
        assert_eq!(document["type"], "TransferPosted");
        assert_eq!(document["subject_id"], "01J0000000000000000000000T");
        assert_eq!(document["balances"], Value::Array(Vec::new()));
        assert_eq!(document["subject_type"], "transfer", "the stored document, not the row alone");
    }

    #[test]
    fn a_broken_payload_still_publishes_the_row() {
        let event = StoredEvent {
            sequence: 7,
            id: "e".to_owned(),
            tenant: "t".to_owned(),
            kind: "AccountOpened".to_owned(),
            subject_id: "a".to_owned(),
            at: Timestamp::from_unix_micros(0),
            body: EventBody::Document("not json".to_owned()),
            traceparent: None,
        };
        let document: Value = serde_json::from_slice(&document(&event)).expect("json");
        assert_eq!(document["id"], "e");
        assert_eq!(document["type"], "AccountOpened");
        assert_eq!(document["sequence"], 7);
    }
}
