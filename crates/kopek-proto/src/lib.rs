//! kopek-proto: generated code for the `.proto` files under `proto/` (kopek.v1, and verbatim
//! copies of the contracts in `shared/spec` under `proto/contracts/`), and the encoded file
//! descriptor set that gRPC reflection serves.

pub mod codec;

/// `kopek.v1`: the ledger's own API.
pub mod kopek {
    pub mod v1 {
        tonic::include_proto!("kopek.v1");
    }
}

/// `transaction.TransactionService`: the streaming contract of `shared/spec/transaction.proto`.
pub mod transaction {
    tonic::include_proto!("transaction");
}

/// `payment.v1.PaymentService`: the authorisation contract of `shared/spec/payment.proto`.
pub mod payment {
    pub mod v1 {
        tonic::include_proto!("payment.v1");
    }
}

/// Every message and service of this crate, encoded, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/kopek_descriptor.bin"));

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The contracts are fixed by existing clients: our copies must stay byte for byte those of
    /// `shared/spec`, which sits beside the repository (as it does in CI).
    #[test]
    fn contract_copies_match_the_shared_spec() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let spec = root.join("../shared/spec");
        if !spec.is_dir() {
            assert!(std::env::var("CI").is_err(), "CI must have shared/spec beside the repository");
            eprintln!(
                "SKIPPED: {} is not here to compare the contract copies with",
                spec.display()
            );
            return;
        }
        for file in ["transaction.proto", "payment.proto"] {
            let ours = std::fs::read(root.join("proto/contracts").join(file)).expect("our copy");
            let theirs = std::fs::read(spec.join(file)).expect("the spec");
            assert!(ours == theirs, "proto/contracts/{file} differs from shared/spec/{file}");
        }
    }
}
