//! kopek-events: the events side of the ledger, as the surfaces see it. It needs only the
//! storage port and the writer's commit signal, and no broker client:
//!
//! - `feed`: the live feed of committed events, in sequence order, for in-process
//!   subscribers (WebSockets, gRPC streams, the relay, the order saga);
//! - `filter`: which events a subscriber wants;
//! - `envelope`: the event document (`docs/events.md`) a subscriber or broker receives;
//! - `subscriptions` and `targets`: what a webhook subscription may ask for and reach;
//! - `relay_status`: what the broker relay reports, for `/readyz` and `/metrics`.
//!
//! Delivering events elsewhere (the broker relay, the webhook sender, the consumers) is
//! `kopek-outbox`, which builds on this crate.

mod feed;

pub mod envelope;
pub mod filter;
pub mod relay_status;
pub mod subscriptions;
pub mod targets;

pub use feed::Feed;
