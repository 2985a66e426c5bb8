//! kopek-intake: the one front door between the surfaces and the engine. Every surface
//! (REST, kopek.v1 gRPC, the HTTP and gRPC contracts, the CLI through gRPC, broker ingestion)
//! decodes its wire shape, calls the intake, and encodes the typed answer:
//!
//! - `access`: what a caller may read (its tenant's, and a bound key its user's), for the
//!   reads every surface makes (accounts, transfers, users, spending, the event stream);
//! - `fields`: the parse rules of single fields (ids, amounts, currencies, times, page sizes);
//! - `account`: an account to open (`AccountInput`, `account_request`);
//! - `transfer`: one transfer request, as every surface reads it (`TransferInput`);
//! - `batch`: several transfers, the linked-batch rule, and one `TransferResult` per transfer;
//! - the other commands (accounts, users, orders, rates, quotes), each with its typed answer,
//!   and the ledger's own payment of an order (`pay_order`, for the order saga);
//! - `conversion`: a price check and a quote, read and priced the same way on every surface;
//! - `contract`: the streaming contract's `Transaction` as a transfer;
//! - `json` and `wire`: the kopek.v1 transfer as JSON and as protobuf, read as a `TransferInput`.
//!
//! An engine failure maps to its code and sentence in one place (`EngineError::rejection`).
//! What each input means is written once, in `docs/api.md` ("One meaning per input").

pub mod access;
pub mod account;
pub mod contract;
pub mod conversion;
pub mod fields;
pub mod import;
pub mod json;
pub mod search;
pub mod wire;

mod batch;
mod commands;
mod transfer;

pub use batch::{Batch, Pending};
pub use commands::PendingPayment;
pub use transfer::{Action, Found, TransferInput, transfer_request};

use kopek_engine::Engine;
use kopek_fx::Fx;

/// The intake of one process: the engine it submits to and the rates it prices with.
#[derive(Clone)]
pub struct Intake {
    engine: Engine,
    fx: Fx,
}

impl Intake {
    pub fn new(engine: Engine, fx: Fx) -> Intake {
        Intake { engine, fx }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn fx(&self) -> &Fx {
        &self.fx
    }

    /// The store the engine writes to, for what reads beside a write (a consumer's inbox).
    pub fn store(&self) -> &std::sync::Arc<dyn kopek_store::Store> {
        self.engine.store()
    }
}
