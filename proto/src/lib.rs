//! Protobuf APIs of the Equipoise services, compiled with tonic.

pub mod randomisation {
    pub mod v1 {
        tonic::include_proto!("equipoise.randomisation.v1");
    }
}

pub mod blinding {
    pub mod v1 {
        tonic::include_proto!("equipoise.blinding.v1");
    }
}

pub mod safety {
    pub mod v1 {
        tonic::include_proto!("equipoise.safety.v1");
    }
}

/// Encoded descriptors of every Equipoise API, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("equipoise_descriptor");
