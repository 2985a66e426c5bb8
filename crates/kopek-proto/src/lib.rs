//! kopek-proto: generated code for the `.proto` files under `proto/`, and the encoded file
//! descriptor set that gRPC reflection serves.

/// `kopek.v1`: the ledger's own API.
pub mod kopek {
    pub mod v1 {
        tonic::include_proto!("kopek.v1");
    }
}

/// Every message and service of this crate, encoded, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/kopek_descriptor.bin"));
