//! kopek-events: the events side of the ledger, as the surfaces see it. It needs only the
//! storage port and the writer's commit signal, and no broker client:
//!
//! - `feed`: the live feed of committed events, in sequence order, for in-process
//!   subscribers (WebSockets, gRPC streams, the relay, the order saga);
//! - `filter`: which events a subscriber wants;
//! - `document`: the event document (`docs/events.md`), made from the event the store
//!   recorded; the one place an event becomes its wire form;
//! - `envelope`: the document with its outbox sequence and schema version, as a subscriber
//!   or broker receives it;
//! - `subscriptions` and `targets`: what a webhook subscription may ask for and reach;
//! - `relay_status`: what the broker relay reports, for `/readyz` and `/metrics`.
//!
//! Delivering events elsewhere (the broker relay, the webhook sender, the consumers) is
//! `kopek-outbox`, which builds on this crate.

mod feed;

pub mod document;

pub mod envelope;
pub mod filter;
pub mod relay_status;
pub mod subscriptions;
pub mod targets;

pub use document::{BalanceDocument, EventDocument};
pub use feed::Feed;
