//! The workload the criterion benches share (this one and `kopek-store-sqlite`'s, which
//! includes this file): 10,000 accounts that may go far below zero, and batches of 8,000
//! transfers between pseudo-random pairs in commands of 1,000, as stream requests carry them.

use kopek_core::{
    AccountId, Batch, Command, CommandBody, Currency, Details, IdempotencyKey, Linking, Movement,
    NewAccount, Overdraft, Tenant, TransferKind, TransferRequest,
};

const ACCOUNTS: usize = 10_000;
pub const TRANSFERS: usize = 8_000;
/// Transfers per command, as a stream request carries them.
const PER_COMMAND: usize = 1_000;

fn account(index: usize) -> AccountId {
    AccountId::parse(&format!("acct-{index:05}")).expect("account id")
}

fn usd() -> Currency {
    Currency::parse("USD").expect("currency")
}

/// Commands opening the accounts, 1,000 per command.
pub fn open_accounts() -> Vec<Batch> {
    let accounts: Vec<NewAccount> = (0..ACCOUNTS)
        .map(|index| {
            let mut new = NewAccount::user(account(index), usd());
            new.overdraft = Overdraft::Limited(1_000_000_000_000);
            new
        })
        .collect();
    accounts
        .chunks(1_000)
        .map(|chunk| {
            let body = CommandBody::CreateAccounts(chunk.to_vec());
            Batch {
                commands: vec![Command::new(
                    Tenant::default_tenant(),
                    kopek_core::Authority::Ledger,
                    body,
                )],
            }
        })
        .collect()
}

/// 8,000 transfers with keys of their own `round`, pairs drawn from a seed made of it.
pub fn transfers(round: u64) -> Batch {
    let mut seed = round.wrapping_add(7);
    let mut next = move || {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) as usize
    };
    let requests: Vec<TransferRequest> = (0..TRANSFERS)
        .map(|index| {
            let payer = next() % ACCOUNTS;
            let payee = (payer + 1 + next() % (ACCOUNTS - 1)) % ACCOUNTS;
            TransferRequest {
                idempotency_key: IdempotencyKey::parse(&format!("r{round}-{index}")).expect("key"),
                kind: TransferKind::Transfer,
                movement: Movement::Move {
                    debit_account: account(payer),
                    credit_account: account(payee),
                    amount: 1 + (next() % 100) as i64,
                    currency: usd(),
                    hold: None,
                },
                details: Details::default(),
                effective_at: None,
                open_if_missing: Vec::new(),
                fingerprint_extra: String::new(),
            }
        })
        .collect();
    let commands = requests
        .chunks(PER_COMMAND)
        .map(|chunk| {
            let body = CommandBody::CreateTransfers {
                transfers: chunk.to_vec(),
                linking: Linking::Independent,
            };
            Command::new(Tenant::default_tenant(), kopek_core::Authority::Ledger, body)
        })
        .collect();
    Batch { commands }
}
